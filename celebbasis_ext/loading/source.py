"""What the user passed as ``--model``, turned into a local path: a folder or a ``.safetensors`` file
on disk, or a Hugging Face id fetched into its cache (``hub``). Pickles and other formats are refused here."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput
from .hub import fetch_hub_model, parse_hub_id

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


def model_label(model, path: Path) -> str:
    """What the user called the model when it was not the path itself (a Hugging Face id), else ``""``."""
    return "" if Path(os.path.expanduser(str(model))) == path else str(model)


def resolve_model_path(model) -> Path:
    """The local folder or ``.safetensors`` file behind ``model`` (fetching a Hugging Face id into its cache
    when it is no local path); BadInput when there is none, or when it is a pickle."""
    if model is None or str(model).strip() == "":
        raise BadInput("no model given: pass a diffusers folder, a .safetensors checkpoint or a Hugging Face id")
    path = Path(os.path.expanduser(str(model)))
    if not path.exists():
        hub = parse_hub_id(str(model))
        if hub is None:
            raise BadInput(f"model not found: {path}")
        if hub.filename:
            check_file_name(Path(hub.filename))  # a pickle is refused before it is downloaded
        path = fetch_hub_model(hub)
    if path.is_file():
        check_file_name(path)
    return path


def check_file_name(path: Path) -> None:
    """Only ``.safetensors`` files are models; pickles get their own message."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise BadInput(
            f"{path.name} is a pickled checkpoint: convert it to .safetensors: pickled checkpoints are never loaded"
        )
    if suffix != ".safetensors":
        raise BadInput(f"{path.name}: a model must be a diffusers folder or a .safetensors checkpoint")
