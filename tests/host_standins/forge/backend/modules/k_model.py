"""``backend.modules.k_model``: ``KModel`` = the diffusion model, its dtypes and its predictor.

``apply_model(x, t, c_crossattn=..., y=...)`` works in sigmas and returns the
denoised latent, like Forge's; Neo also freezes the diffusion model here.
"""

import os

import torch

from backend.modules.k_prediction import k_prediction_from_diffusers_scheduler


class KModel(torch.nn.Module):
    def __init__(self, model, diffusers_scheduler, k_predictor=None, config=None):
        super().__init__()
        self.config = config
        self.storage_dtype = model.storage_dtype
        self.computation_dtype = model.computation_dtype
        self.diffusion_model = model
        if os.environ.get("FORGE_STANDIN_FLAVOR", "neo") == "neo":
            self.diffusion_model.eval()
            self.diffusion_model.requires_grad_(False)
        if k_predictor is None:
            k_predictor = k_prediction_from_diffusers_scheduler(diffusers_scheduler)
        self.predictor = k_predictor

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        xc = self.predictor.calculate_input(sigma, x)
        if c_concat is not None:
            xc = torch.cat([xc, c_concat], dim=1)
        dtype = self.computation_dtype
        xc = xc.to(dtype)
        t = self.predictor.timestep(t).float()
        context = c_crossattn.to(dtype)
        extra = {k: (v.to(dtype) if hasattr(v, "dtype") and v.dtype not in (torch.int, torch.long) else v)
                 for k, v in kwargs.items()}
        out = self.diffusion_model(xc, t, context=context, control=control, transformer_options=transformer_options,
                                   **extra).float()
        return self.predictor.calculate_denoised(sigma, out, x)

    def memory_required(self, input_shape):
        return input_shape[0] * input_shape[2] * input_shape[3] * 4 * 1024
