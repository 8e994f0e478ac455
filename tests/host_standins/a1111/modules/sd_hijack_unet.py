"""modules/sd_hijack_unet.py: A1111's wrapper around ``LatentDiffusion.apply_model`` and
sgm's ``OpenAIWrapper.forward``: inputs are cast to ``devices.dtype_unet`` (a
dict cond is cast in place), and the call runs under ``devices.autocast()``."""

import torch

from modules import devices

import standin_models


def apply_model(orig_func, self, x_noisy, t, cond, **kwargs):
    """Always make sure inputs to unet are in correct dtype."""
    if isinstance(cond, dict):
        for y in cond.keys():
            if isinstance(cond[y], list):
                cond[y] = [x.to(devices.dtype_unet) if isinstance(x, torch.Tensor) else x for x in cond[y]]
            else:
                cond[y] = cond[y].to(devices.dtype_unet) if isinstance(cond[y], torch.Tensor) else cond[y]

    with devices.autocast():
        result = orig_func(self, x_noisy.to(devices.dtype_unet), t.to(devices.dtype_unet), cond, **kwargs)
        if devices.unet_needs_upcast:
            return result.float()
        else:
            return result


def _wrap(cls, name):
    # the stand-in's model classes outlive a re-import of ``modules``: wrap the original again,
    # so the wrapper always reads the current ``modules.devices``
    original = getattr(cls, name)
    original = getattr(original, "_a1111_original", original)

    def wrapper(self, *args, **kwargs):
        return apply_model(original, self, *args, **kwargs)

    wrapper._a1111_original = original
    setattr(cls, name, wrapper)


_wrap(standin_models.LatentDiffusion, "apply_model")
_wrap(standin_models.OpenAIWrapper, "forward")
