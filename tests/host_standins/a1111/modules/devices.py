"""modules/devices.py: device/dtype globals, ``autocast``, ``torch_gc``, ``cond_cast_unet``.

Values are set by ``shared_init.initialize()`` exactly as in 1.10.1
(``--use-cpu all`` -> cpu; ``--no-half`` -> float32; ``--precision full`` ->
dtype_inference float32). Without CUDA, ``cuda_no_autocast`` answers False
instead of raising.
"""

import contextlib

import torch

from modules import shared


def has_xpu() -> bool:
    return False


def has_mps() -> bool:
    return False


def cuda_no_autocast(device_id=None) -> bool:
    if not torch.cuda.is_available():
        return False
    if device_id is None:
        device_id = get_cuda_device_id()
    return torch.cuda.get_device_capability(device_id) == (7, 5) and torch.cuda.get_device_name(device_id).startswith("NVIDIA GeForce GTX 16")


def get_cuda_device_id():
    return (int(shared.cmd_opts.device_id) if shared.cmd_opts.device_id is not None and shared.cmd_opts.device_id.isdigit() else 0) or torch.cuda.current_device()


def get_cuda_device_string():
    if shared.cmd_opts.device_id is not None:
        return f"cuda:{shared.cmd_opts.device_id}"
    return "cuda"


def get_optimal_device_name():
    if torch.cuda.is_available():
        return get_cuda_device_string()
    return "cpu"


def get_optimal_device():
    return torch.device(get_optimal_device_name())


def get_device_for(task):
    if task in shared.cmd_opts.use_cpu or "all" in shared.cmd_opts.use_cpu:
        return cpu
    return get_optimal_device()


gc_calls = 0


def torch_gc():
    global gc_calls
    gc_calls += 1
    if torch.cuda.is_available():
        with torch.cuda.device(get_cuda_device_string()):
            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()


def torch_npu_set_device():
    pass


cpu: torch.device = torch.device("cpu")
fp8: bool = False
force_fp16: bool = False
device: torch.device = None
device_interrogate: torch.device = None
device_gfpgan: torch.device = None
device_esrgan: torch.device = None
device_codeformer: torch.device = None
dtype: torch.dtype = torch.float16
dtype_vae: torch.dtype = torch.float16
dtype_unet: torch.dtype = torch.float16
dtype_inference: torch.dtype = torch.float16
unet_needs_upcast = False


def cond_cast_unet(input):
    if force_fp16:
        return input.to(torch.float16)
    return input.to(dtype_unet) if unet_needs_upcast else input


def cond_cast_float(input):
    return input.float() if unet_needs_upcast else input


def autocast(disable=False):
    if disable:
        return contextlib.nullcontext()
    if force_fp16:
        return contextlib.nullcontext()
    if fp8 and device == cpu:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=True)
    if dtype == torch.float32 or dtype_inference == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cuda")


def without_autocast(disable=False):
    return torch.autocast("cuda", enabled=False) if torch.is_autocast_enabled() and not disable else contextlib.nullcontext()


class NansException(Exception):
    pass


def test_for_nans(x, where):
    if shared.cmd_opts.disable_nan_check:
        return
    if not torch.isnan(x[(0, ) * len(x.shape)]):
        return
    raise NansException(f"A tensor with NaNs was produced in {where}.")
