"""The learned identity as a Textual-Inversion ``.safetensors`` file, both ways.

Files load in A1111, Forge, SD.Next, ComfyUI and diffusers without this
project: SD1/SD2 ``{"emb_params": [2, W]}``, SDXL ``{"clip_l": [2, 768],
"clip_g": [2, 1280]}``. The header metadata records how the file was made
(method, version, base model, steps, seed, K, mode, coefficients) and never
the photo or its path. Writes are atomic (temporary file, then rename), and
an existing file is replaced only when asked.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from . import __version__
from .adapter import EXPORT_KEYS, ModelFamily
from .errors import BadInput
from .loading import PICKLE_SUFFIXES

METHOD = "celebbasis"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


@dataclass
class Identity:
    """One person's embedding: vectors per text encoder plus how it was made."""

    name: str
    family: ModelFamily
    vectors: dict[str, torch.Tensor]
    coefficients: Optional[torch.Tensor] = None
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_embedding(cls, name: str, family: ModelFamily, embedding: torch.Tensor, widths, coefficients=None,
                       **metadata) -> "Identity":
        """Split a joint (2, sum(widths)) embedding into the file's per-encoder tensors."""
        keys = EXPORT_KEYS[family]
        if embedding.shape[-1] != sum(widths) or len(widths) != len(keys):
            raise ValueError(f"embedding width {embedding.shape[-1]} does not match encoders {widths}")
        parts = torch.split(embedding.detach().float().cpu(), list(widths), dim=-1)
        info = {key: str(value) for key, value in metadata.items() if value is not None}
        info.setdefault("method", METHOD)
        info.setdefault("version", __version__)
        info["family"] = family.value
        info["name"] = name
        if coefficients is not None:
            info["coefficients"] = json.dumps([[round(float(v), 6) for v in row] for row in coefficients.tolist()])
            info["k"] = str(coefficients.shape[-1])
        return cls(name, family, {key: part.contiguous() for key, part in zip(keys, parts)}, coefficients, info)


def validate_name(name: str) -> str:
    """The token name doubles as the file name: letters, digits, '_' and '-', at most 64, no path tricks."""
    if not isinstance(name, str) or not name.strip():
        raise BadInput("the name is empty: give the token a name such as 'anna_k'")
    if "\x00" in name:
        raise BadInput("the name contains a NUL character")
    if any(sep in name for sep in ("/", "\\", ":")) or name.strip(".") == "" or ".." in name:
        raise BadInput(f"the name {name!r} must not contain path separators, drive letters or dots")
    if len(name) > 64:
        raise BadInput(f"the name is {len(name)} characters long; use at most 64")
    if not NAME_PATTERN.match(name):
        raise BadInput(f"the name {name!r} may only use letters, digits, '_' and '-', starting with a letter or digit")
    if name.lower() in _WINDOWS_RESERVED:
        raise BadInput(f"the name {name!r} is reserved on Windows; choose another")
    return name


def output_path(out_dir: str | os.PathLike, name: str) -> Path:
    """``out_dir/NAME.safetensors``, checked to stay inside ``out_dir``."""
    validate_name(name)
    folder = Path(out_dir).expanduser().resolve()
    path = (folder / f"{name}.safetensors").resolve()
    if path.parent != folder:
        raise BadInput(f"the name {name!r} would write outside {folder}")
    return path


def save_identity(identity: Identity, out_dir: str | os.PathLike, overwrite: bool = False,
                  half: bool = False) -> Path:
    """Write ``out_dir/NAME.safetensors`` atomically; refuse to replace unless ``overwrite``."""
    from safetensors.torch import save_file

    path = output_path(out_dir, identity.name)
    if path.exists() and not overwrite:
        raise BadInput(f"{path.name} already exists in {path.parent}; choose another name or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path.parent, identity.name)
    tensors = {key: (value.half() if half else value.float()).contiguous() for key, value in identity.vectors.items()}
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{identity.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, tmp, metadata=identity.metadata)
        with open(tmp, "rb") as stream:
            os.fsync(stream.fileno())
        if not overwrite and path.exists():
            raise BadInput(f"{path.name} appeared while saving; not overwritten")
        os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600; a shared embedding is 0644-like
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


STALE_SECONDS = 600


def _default_file_mode() -> int:
    """What ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Temporary files left by a process killed mid-save (older than ten minutes)."""
    import time

    for leftover in folder.glob(f".{name}.*.tmp"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_SECONDS:
                leftover.unlink()
        except OSError:
            pass




def read_metadata(path: str | os.PathLike) -> dict:
    """The header metadata of a ``.safetensors`` file: no tensor is read, nothing is unpickled."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:
        raise BadInput(f"{Path(path).name} is not a readable .safetensors file ({type(error).__name__})") from None


def load_identity(path: str | os.PathLike) -> Identity:
    """Read a Textual-Inversion ``.safetensors`` (ours or anyone's); never unpickles."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BadInput(f"{path.name} is a pickle file; only .safetensors embeddings are read (pickles can run code)")
    if not path.is_file():
        raise BadInput(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            vectors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:
        raise BadInput(f"{path.name} is not a readable .safetensors file ({type(error).__name__})") from None
    if set(vectors) == {"clip_l", "clip_g"}:
        family = ModelFamily.SDXL
    elif len(vectors) == 1:
        only = next(iter(vectors.values()))
        family = ModelFamily.SD2 if only.shape[-1] == 1024 else ModelFamily.SD1
        if metadata.get("family") in (ModelFamily.SD1.value, ModelFamily.SD2.value):
            family = ModelFamily(metadata["family"])
        vectors = {"emb_params": only}
    else:
        raise BadInput(f"{path.name} is not a Textual-Inversion embedding (keys: {', '.join(sorted(vectors)) or 'none'})")
    coefficients = None
    if "coefficients" in metadata:
        try:
            coefficients = torch.tensor(json.loads(metadata["coefficients"]))
        except (ValueError, TypeError):
            coefficients = None
    return Identity(metadata.get("name", path.stem), family, vectors, coefficients, metadata)


def describe_identity(identity: Identity) -> dict:
    """Shapes and metadata, for ``celebbasis inspect`` and the identities list."""
    metadata = {key: value for key, value in identity.metadata.items() if key != "coefficients"}
    return {
        "name": identity.name,
        "family": identity.family.value,
        "shapes": {key: list(value.shape) for key, value in identity.vectors.items()},
        "dtype": str(next(iter(identity.vectors.values())).dtype).replace("torch.", ""),
        "has_coefficients": identity.coefficients is not None,
        "metadata": metadata,
    }
