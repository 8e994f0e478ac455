"""What the user passed as ``--model``, turned into a local path: a folder or a ``.safetensors`` file
on disk, or a Hugging Face id found in the local cache. Pickles and other formats are refused here."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from ..errors import BadInput

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


def model_label(model, path: Path) -> str:
    """What the user called the model when it was not the path itself (a Hugging Face id), else ``""``."""
    return "" if Path(os.path.expanduser(str(model))) == path else str(model)


def resolve_model_path(model) -> Path:
    """The local folder or ``.safetensors`` file behind ``model``; BadInput when there is none."""
    if model is None or str(model).strip() == "":
        raise BadInput("no model given: pass a diffusers folder or a .safetensors checkpoint")
    path = Path(os.path.expanduser(str(model)))
    if not path.exists():
        cached = _hub_cache_folder(str(model))
        if cached is None:
            raise BadInput(f"model not found: {path}")
        path = cached
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise BadInput(
                f"{path.name} is a pickled checkpoint: convert it to .safetensors: pickled checkpoints are never loaded"
            )
        if suffix != ".safetensors":
            raise BadInput(f"{path.name}: a model must be a diffusers folder or a .safetensors checkpoint")
    return path


def _hub_cache_folder(name: str) -> Optional[Path]:
    """``owner/name`` of a diffusers model already in the Hugging Face cache (never downloads)."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) or os.path.isabs(name):
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, no hub library, malformed: all mean "not there"
        return None
    return folder if (folder / "model_index.json").is_file() else None
