"""Device, dtype and prediction-type options, checked before anything is loaded."""

from __future__ import annotations

from typing import Any, Optional

from ..adapter import ModelFamily
from ..errors import BadInput

PREDICTION_TYPES = ("epsilon", "v_prediction")


def resolve_device(device: Any = "auto"):
    """``auto`` -> cuda, then mps, then cpu; an explicit device must be available."""
    import torch

    name = str(device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError):
        raise BadInput(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BadInput("device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise BadInput(f"there is no {resolved}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise BadInput("device mps was asked for but this PyTorch has no MPS support; use --device cpu or auto")
    return resolved


_DTYPE_NAMES = {
    "fp32": "float32", "float32": "float32", "float": "float32", "full": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}


def resolve_dtype(dtype: Any, device, family: Optional[ModelFamily] = None):
    """``auto``: fp32 on CPU; fp16 on CUDA and MPS, except SD2 on CUDA gets bf16 where
    the GPU has it (SD 2.1's attention overflows in fp16 and renders black)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype or "auto").lower()
    if name == "auto":
        if device.type == "cuda":
            if family == ModelFamily.SD2 and torch.cuda.is_bf16_supported():
                return torch.bfloat16
            return torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if name not in _DTYPE_NAMES:
        raise BadInput(f"unknown dtype {dtype!r}: use auto, fp32, fp16 or bf16")
    return getattr(torch, _DTYPE_NAMES[name])


def normalize_prediction_type(value: Optional[str]) -> Optional[str]:
    """``epsilon``/``v_prediction``, or None for auto."""
    if value is None or str(value).lower() in ("", "auto"):
        return None
    name = str(value).lower().replace("-", "_")
    if name in ("v", "v_prediction", "vpred", "v_pred"):
        return "v_prediction"
    if name in ("eps", "epsilon", "noise"):
        return "epsilon"
    raise BadInput(f"unknown prediction type {value!r}: use auto, epsilon or v")
