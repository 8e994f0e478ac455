"""``backend.patcher.vae``: ``VAE.encode`` (NHWC pixels in [0, 1]) loads its patcher through the memory
manager, then samples the posterior (or applies the patcher's ``model_vae_regulation``)."""

import torch

from backend import memory_management
from backend.patcher.base import ModelPatcher


class VAE:
    def __init__(self, model=None, no_init=False):
        if no_init:
            return
        self.first_stage_model = model.eval()
        self.device = memory_management.vae_device()
        self.vae_dtype = memory_management.vae_dtype()
        self.output_device = memory_management.intermediate_device()
        self.first_stage_model.to(self.vae_dtype)
        self.patcher = ModelPatcher(self.first_stage_model, load_device=self.device,
                                    offload_device=memory_management.vae_offload_device())

    def encode(self, pixel_samples):
        regulation = self.patcher.model_options.get("model_vae_regulation", None)
        pixel_samples = pixel_samples.movedim(-1, 1)
        memory_management.load_models_gpu([self.patcher], memory_required=0)
        pixels = (2.0 * pixel_samples - 1.0).to(self.vae_dtype).to(self.device)
        return self.first_stage_model.encode(pixels, regulation).to(self.output_device).float()

    def decode(self, samples):
        memory_management.load_models_gpu([self.patcher], memory_required=0)
        out = self.first_stage_model.decode(samples.to(self.vae_dtype).to(self.device))
        return torch.clamp((out.float() + 1.0) / 2.0, 0.0, 1.0).movedim(1, -1)
