"""The header of a ``.safetensors`` file, read without its tensors, and the key prefixes of the
original (CompVis ``ldm`` / Stability ``sgm``) checkpoint layout."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Optional

from ..errors import BadInput

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
XL_TEXT_L = "conditioner.embedders.0.transformer."
XL_TEXT_G = "conditioner.embedders.1.model."
XL_REFINER_TEXT = "conditioner.embedders.0.model."


def read_safetensors_header(path: Path) -> tuple[dict, dict]:
    """``({key: {"dtype", "shape", "data_offsets"}}, metadata)`` from the header alone.

    Also checks the file is as long as the header says, so a truncated
    download is named as such instead of failing halfway through loading.
    """
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise BadInput(f"{name} is not a valid .safetensors file (empty or truncated)")
            (length,) = struct.unpack("<Q", head)
            if length <= 1 or length > min(size - 8, 200 * 1024 * 1024):
                raise BadInput(f"{name} is not a valid .safetensors file (bad header; truncated or corrupt?)")
            raw = handle.read(length)
    except OSError as error:
        raise BadInput(f"cannot read {name}: {error.strerror or error}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadInput(f"{name} is not a valid .safetensors file (unreadable header; truncated or corrupt?)") from None
    if not isinstance(header, dict):
        raise BadInput(f"{name} is not a valid .safetensors file (bad header)")
    metadata = header.pop("__metadata__", None) or {}
    end = 0
    for key, entry in header.items():
        try:
            begin, stop = entry["data_offsets"]
            entry["shape"] = [int(x) for x in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{name} is not a valid .safetensors file (bad entry {key!r})") from None
        end = max(end, int(stop))
    if size < 8 + length + end:
        raise BadInput(
            f"{name} is truncated ({size} bytes, the header describes {8 + length + end}): download or copy it again"
        )
    return header, metadata


def first_key(keys, *candidates: str) -> Optional[str]:
    """The first of ``candidates`` present in ``keys``, or None."""
    for key in candidates:
        if key in keys:
            return key
    return None


def count_indices(keys, prefix: str) -> int:
    """Number of distinct N in ``prefix + "N."`` keys."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(match.group(1)) for key in keys if (match := pattern.match(key))}
    return len(found)
