"""A model named by its Hugging Face id, fetched once into huggingface_hub's own cache.

Two forms (local paths always win when they exist):

* ``owner/name``: a repository with a diffusers layout (``model_index.json``
  and component folders). Only configs, tokenizer files and ``.safetensors``
  weights are fetched: full precision, or the ``fp16`` variant where the UNet
  has no other. Pickled ``.bin`` weights are never fetched.
* ``owner/name/path/to/file.safetensors`` (the path inside the repository, as
  in its web address; a ``https://huggingface.co/owner/name/blob/REV/FILE``
  address works too): one single-file checkpoint.

Downloads go through ``huggingface_hub.snapshot_download`` with a progress bar
on stderr, into the standard cache (``HF_HUB_CACHE`` / ``HF_HOME``), and only
happen when the files are not there already. ``HF_HUB_OFFLINE=1`` (what
``--offline`` sets) forbids them: a cached model is used, an uncached one is
refused with a one-line message.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import BadInput, ModelFilesMissing

_PART = r"[A-Za-z0-9][\w.-]*"
_REPO = re.compile(rf"({_PART})/({_PART})")
_URL = re.compile(rf"https?://(?:www\.)?huggingface\.co/({_PART}/{_PART})/(?:blob|resolve)/([^/]+)/(.+)")
#: A two-part name ending like this is a missing local file (``models/x.safetensors``), not a repository.
_FILE_NAME = re.compile(r".*\.(safetensors|ckpt|pt|pth|bin|pkl|pickle|gguf)", re.IGNORECASE)

#: Configs and tokenizer files of a diffusers repository (fnmatch patterns: ``*`` also matches ``/``).
_CONFIG_FILES = ["*.json", "*.txt"]
#: The components we load and their weight files' stem; the safety checker and the rest are never fetched.
_WEIGHT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                 "text_encoder": "model", "text_encoder_2": "model"}


def folder_patterns(variant: str = "") -> list:
    """``allow_patterns`` for a diffusers repository: configs plus one variant's ``.safetensors`` weights."""
    suffix = f".{variant}" if variant else ""
    return _CONFIG_FILES + [f"{folder}/{stem}{suffix}{tail}" for folder, stem in _WEIGHT_STEMS.items()
                            for tail in (".safetensors", "-*-of-*.safetensors")]


@dataclass(frozen=True)
class HubModel:
    """``repo_id`` and, for a single-file checkpoint, the ``filename`` inside it."""

    repo_id: str
    filename: Optional[str] = None
    revision: Optional[str] = None

    @property
    def label(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id

    def pattern_sets(self) -> list:
        """What to fetch, in order of preference: full-precision weights, then the fp16 variant."""
        return [[self.filename]] if self.filename else [folder_patterns(), folder_patterns("fp16")]


def parse_hub_id(model: str) -> Optional[HubModel]:
    """The Hugging Face model ``model`` names, or None when it cannot be one (an absolute or ``./`` path...)."""
    text = str(model).strip()
    url = _URL.fullmatch(text)
    if url:
        return HubModel(url.group(1), url.group(3), url.group(2))
    if os.path.isabs(text) or text.startswith(("~", ".")) or "\\" in text or "//" in text:
        return None
    parts = text.split("/")
    if len(parts) < 2 or not _REPO.fullmatch("/".join(parts[:2])) or any(p in ("", ".", "..") for p in parts):
        return None
    repo_id = "/".join(parts[:2])
    if len(parts) == 2:
        return None if _FILE_NAME.fullmatch(parts[1]) else HubModel(repo_id)
    return HubModel(repo_id, "/".join(parts[2:]))


def downloads_allowed() -> bool:
    """False under ``HF_HUB_OFFLINE=1`` (read now, so ``--offline`` works even after huggingface_hub was imported)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() not in ("1", "ON", "YES", "TRUE")


def fetch_hub_model(hub: HubModel) -> Path:
    """The local path of ``hub`` (a snapshot folder or a file in it), downloading only what the cache lacks."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise BadInput(f"model not found: {hub.label} is not a local path, and huggingface_hub (needed to "
                       "download it) is not installed") from None
    partly = False
    for patterns in hub.pattern_sets():
        found, some = _cached(hub, patterns)
        partly = partly or some
        if found is not None:
            return found
    if not downloads_allowed():
        where = (f"{hub.label} is only partly in the Hugging Face cache" if partly else
                 f"model not found: {hub.label} is no local path and not in the Hugging Face cache")
        raise ModelFilesMissing(f"{where} ({_cache_root()}), and downloads are off (--offline or HF_HUB_OFFLINE=1): "
                                "run once without them to download it")
    for patterns in hub.pattern_sets():
        path = _download(hub, patterns)
        missing = _missing_weights(hub, path)
        if "unet" not in missing:  # else the next set: the UNet may exist only as the fp16 variant
            break
    if missing == ["model_index.json"]:
        raise BadInput(f"{hub.label} has no model_index.json: not a diffusers repository; for a single "
                       f"checkpoint in it, name the file: {hub.repo_id}/FILE.safetensors")
    if missing:
        raise ModelFilesMissing(f"{hub.label}: no .safetensors weights for {', '.join(missing)} in the repository "
                                "(pickled .bin weights are never loaded)")
    return path


def _cache_root() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _snapshot(hub: HubModel, patterns: list, **kwargs) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(hub.repo_id, revision=hub.revision, allow_patterns=patterns, **kwargs))


def _cached(hub: HubModel, patterns: list) -> tuple:
    """(the usable cached path or None, whether some of it is cached), without touching the network.

    The same patterns as the download: huggingface_hub calls a snapshot incomplete when files the
    patterns select are missing, and we never fetch the whole repository.
    """
    try:
        folder = _snapshot(hub, patterns, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - not cached, or too broken to use: both mean "download"
        return None, "Incomplete" in type(error).__name__
    path = folder / hub.filename if hub.filename else folder
    return (None if _missing_weights(hub, path) else path), True


def _missing_weights(hub: HubModel, path: Path) -> list:
    """What a snapshot lacks before it can load: the file, ``model_index.json`` or a component's weights."""
    if hub.filename:
        return [] if path.is_file() else [hub.filename]
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["model_index.json"]
    return [name for name in _WEIGHT_STEMS
            if isinstance(index.get(name), list) and index[name][:1] != [None]
            and not any((path / name).glob("*.safetensors"))]


def _download(hub: HubModel, patterns: list) -> Path:
    from huggingface_hub.utils import HfHubHTTPError

    try:
        folder = _snapshot(hub, patterns, tqdm_class=_progress_bar(hub.label))
    except HfHubHTTPError as error:
        raise BadInput(_http_message(hub, error)) from None
    except (OSError, ValueError) as error:  # no connection (LocalEntryNotFoundError), bad id (HFValidationError)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFilesMissing(f"could not download {hub.label} from Hugging Face: {first[:200]}") from None
    return folder / hub.filename if hub.filename else folder


def _http_message(hub: HubModel, error) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    kind = type(error).__name__
    if "Gated" in kind:
        return f"{hub.repo_id} is gated: accept its licence on huggingface.co and log in (hf auth login)"
    if "RepositoryNotFound" in kind or status == 401:
        return f"model not found: {hub.label} is neither a local path nor a Hugging Face repository you can read"
    if "EntryNotFound" in kind or "RevisionNotFound" in kind or status == 404:
        return f"model not found: {hub.repo_id} has no {hub.filename or 'such revision'}"
    return f"could not download {hub.label} from Hugging Face: HTTP {status or kind}"


def downloads_show_progress() -> bool:
    """False under ``HF_HUB_DISABLE_PROGRESS_BARS=1``."""
    return os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().upper() not in ("1", "ON", "YES", "TRUE")


def _progress_bar(label: str):
    """A tqdm class for huggingface_hub that draws on stderr (unless ``HF_HUB_DISABLE_PROGRESS_BARS``), its
    bars named after the model: a download of gigabytes must show that it moves."""
    from tqdm.auto import tqdm

    class DownloadBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["desc"] = f"{label}: {kwargs.get('desc') or 'downloading'}"
            kwargs.setdefault("file", sys.stderr)
            kwargs["disable"] = not downloads_show_progress()
            super().__init__(*args, **kwargs)

    return DownloadBar
