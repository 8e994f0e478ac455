"""``comfy.model_base``: the model a ``ModelPatcher`` wraps.

As in ComfyUI: ``BaseModel(model_config, model_type=ModelType.EPS, device=None, unet_model=UNetModel)``
builds ``diffusion_model`` from ``model_config.unet_config`` and ``model_sampling`` (a
``ModelSamplingDiscrete`` with ``EPS`` or ``V_PREDICTION``) from the model type;
``apply_model(x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs)``
takes sigmas, scales the input, calls the UNet at ``model_sampling.timestep(sigma)`` and returns the
denoised latent; ``process_latent_in`` applies the latent format's scale; ``get_dtype()`` is the
UNet's dtype and ``manual_cast_dtype`` the config's. ``SDXL.encode_adm(**kwargs)`` is
``cat(pooled_output, Timestep(256) of height, width, crop_h, crop_w, target_height, target_width)``
(the embedding width comes from the tiny UNet here).
"""

from enum import Enum

import torch

import comfy.model_sampling
from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep, UNetModel


class ModelType(Enum):
    EPS = 1
    V_PREDICTION = 2
    V_PREDICTION_EDM = 3
    FLOW = 6


def model_sampling(model_config, model_type):
    prediction = {ModelType.EPS: comfy.model_sampling.EPS, ModelType.V_PREDICTION: comfy.model_sampling.V_PREDICTION}
    if model_type not in prediction:
        raise NotImplementedError(f"the stand-in has no {model_type} sampling")

    class ModelSampling(comfy.model_sampling.ModelSamplingDiscrete, prediction[model_type]):
        pass

    return ModelSampling(model_config)


class BaseModel(torch.nn.Module):
    def __init__(self, model_config, model_type=ModelType.EPS, device=None, unet_model=UNetModel):
        super().__init__()
        self.latent_format = model_config.latent_format
        self.model_config = model_config
        self.manual_cast_dtype = model_config.manual_cast_dtype
        self.device = device
        self.diffusion_model = unet_model(**model_config.unet_config, device=device)
        self.model_type = model_type
        self.model_sampling = model_sampling(model_config, model_type)
        self.adm_channels = model_config.unet_config.get("adm_in_channels") or 0

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        dtype = self.manual_cast_dtype or self.get_dtype()
        timestep = self.model_sampling.timestep(t).float()
        extra = {key: value.to(xc.device, dtype) if hasattr(value, "dtype") else value for key, value in kwargs.items()}
        output = self.diffusion_model(xc.to(dtype), timestep, context=c_crossattn.to(xc.device, dtype), control=control,
                                      transformer_options=transformer_options, **extra).float()
        return self.model_sampling.calculate_denoised(sigma, output, x)

    def get_dtype(self):
        return self.diffusion_model.dtype

    def encode_adm(self, **kwargs):
        return None

    def process_latent_in(self, latent):
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent):
        return self.latent_format.process_out(latent)


class SDXL(BaseModel):
    def __init__(self, model_config, model_type=ModelType.EPS, device=None):
        super().__init__(model_config, model_type, device=device)
        self.embedder = Timestep(model_config.unet_config["diffusers_config"]["addition_time_embed_dim"])

    def encode_adm(self, **kwargs):
        pooled = kwargs["pooled_output"]
        width, height = kwargs.get("width", 768), kwargs.get("height", 768)
        values = [height, width, kwargs.get("crop_h", 0), kwargs.get("crop_w", 0),
                  kwargs.get("target_height", height), kwargs.get("target_width", width)]
        flat = torch.flatten(torch.cat([self.embedder(torch.Tensor([value])) for value in values]))
        flat = flat.unsqueeze(dim=0).repeat(pooled.shape[0], 1)
        return torch.cat((pooled.to(flat.device), flat), dim=1)
