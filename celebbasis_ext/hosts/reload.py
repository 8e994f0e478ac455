"""After an embedding file is written (or deleted), make the host use it in the very next generation.

Each host keeps its own Textual-Inversion database and reads the embeddings
folder only at certain times, and some cache the prompt's conditioning:

* AUTOMATIC1111 (and Forge classic, which keeps A1111's database):
  ``sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)``.
* Forge main and Neo: every text engine of the loaded model has its own
  database, read only when the model is built: ``load_textual_inversion_embeddings()``
  on ``text_processing_engine`` (SD1/SD2) or on both ``_l`` and ``_g`` (SDXL).
* SD.Next: ``sd_model.embedding_db.load_textual_inversion_embeddings(force_reload=True)``
  and its prompt-embeds cache.
* Everywhere with ``StableDiffusionProcessing.cached_c/cached_uc``: cleared, or
  the same prompt would reuse a retrained name's old vectors.

``reload_embeddings(host)`` does what the host needs and returns what it did;
it never raises for a host that lacks a piece (nothing loaded yet is fine:
files are read when the model loads).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Iterable, Optional

from .detect import HostInfo, HostKind, detect_host

log = logging.getLogger(__name__)

ENGINE_ATTRIBUTES = ("text_processing_engine", "text_processing_engine_l", "text_processing_engine_g")


def _module(name: str):
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def _loaded_model():
    """The host's model without triggering a load (None or FakeInitialModel when none is loaded)."""
    for name in ("modules.sd_models", "modules.modeldata"):
        model_data = getattr(_module(name), "model_data", None)
        if model_data is not None:
            return getattr(model_data, "sd_model", None)
    return None


def embeddings_dir(host: Optional[HostInfo] = None) -> Optional[Path]:
    """The folder the host reads embeddings from (files in subfolders count too), or None."""
    host = host or detect_host()
    shared = _module("modules.shared")
    if host.kind == HostKind.SDNEXT:
        folder = getattr(getattr(shared, "opts", None), "embeddings_dir", None)
    else:
        folder = getattr(getattr(shared, "cmd_opts", None), "embeddings_dir", None)
    return Path(folder).expanduser() if folder else None


def _clear_cached_conditioning() -> bool:
    processing = _module("modules.processing")
    cls = getattr(processing, "StableDiffusionProcessing", None)
    if cls is None or not hasattr(cls, "cached_c"):
        return False
    for name in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):  # hires fix has its own
        if not hasattr(cls, name):
            continue
        current = getattr(cls, name, None)
        length = len(current) if isinstance(current, list) and current else 3
        setattr(cls, name, [None] * length)
    return True


def _reload_a1111_database() -> bool:
    sd_hijack = _module("modules.sd_hijack")
    database = getattr(getattr(sd_hijack, "model_hijack", None), "embedding_db", None)
    if database is None or not hasattr(database, "load_textual_inversion_embeddings"):
        return False
    database.load_textual_inversion_embeddings(force_reload=True)
    return True


def _reload_forge_engines(sd_model) -> list[str]:
    done = []
    for name in ENGINE_ATTRIBUTES:
        database = getattr(getattr(sd_model, name, None), "embeddings", None)
        if database is not None and hasattr(database, "load_textual_inversion_embeddings"):
            database.load_textual_inversion_embeddings()
            done.append(name)
    return done


def reload_embeddings(host: Optional[HostInfo] = None, removed: Iterable[str] = ()) -> list[str]:
    """Reload the host's embedding databases and clear cached conditioning; returns what was reloaded.

    ``removed``: names whose files were just deleted (SD.Next keeps their tokens unless told).
    """
    host = host or detect_host()
    done: list[str] = []
    try:
        model = _loaded_model()
        if host.kind == HostKind.SDNEXT:
            from .sdnext import reload_embeddings as reload_sdnext

            if reload_sdnext(model, removed=removed):
                done.append("embedding_db")
        elif host.is_forge_engine:
            if model is not None and type(model).__name__ != "FakeInitialModel":
                done += _reload_forge_engines(model)
        elif host.kind in (HostKind.A1111, HostKind.FORGE_CLASSIC):
            if _reload_a1111_database():
                done.append("model_hijack.embedding_db")
        if host.kind != HostKind.STANDALONE and _clear_cached_conditioning():
            done.append("cached_c")
    except Exception as error:  # a reload problem must not lose the file that was just written
        log.warning("CelebBasis: reloading embeddings in %s failed: %s", host.label, error)
    return done
