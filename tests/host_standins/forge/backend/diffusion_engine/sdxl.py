"""``backend.diffusion_engine.sdxl``: ``StableDiffusionXL`` (CLIP-L + CLIP-G engines, clip skip 2, pooled
from G, size embedding with ``Timestep``) and ``StableDiffusionXLRefiner`` (CLIP-G only). Neo builds the
rectified-flow variant when the checkpoint's ``sampling_settings`` say "RF" (``use_shift``)."""

import os

import torch

from backend import memory_management
from backend.args import dynamic_args
from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.nn.unet import Timestep
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE
from backend.text_processing.classic_engine import ClassicTextProcessingEngine
from modules.shared import opts


def _engine(clip, key, config, pooled):
    return ClassicTextProcessingEngine(
        text_encoder=getattr(clip.cond_stage_model, key), tokenizer=getattr(clip.tokenizer, key),
        embedding_dir=dynamic_args["embedding_dir"], embedding_key=key,
        embedding_expected_shape=config.embedding_width, text_projection=pooled, minimal_clip_skip=2,
        clip_skip=2, return_pooled=pooled, final_layer_norm=False)


class _SDXLBase(ForgeDiffusionEngine):
    def _size_embedding(self, prompt, batch, like, extra=()):
        width = getattr(prompt, "width", 1024) or 1024
        height = getattr(prompt, "height", 1024) or 1024
        values = [height, width, opts.sdxl_crop_top, opts.sdxl_crop_left, *(extra or (height, width))]
        out = [self.embedder(torch.Tensor([value])) for value in values]
        return torch.flatten(torch.cat(out)).unsqueeze(dim=0).repeat(batch, 1).to(like)

    @torch.inference_mode()
    def encode_first_stage(self, x):
        sample = self.forge_objects.vae.encode(x.movedim(1, -1) * 0.5 + 0.5)
        sample = self.forge_objects.vae.first_stage_model.process_in(sample)
        return sample.to(x)

    @torch.inference_mode()
    def decode_first_stage(self, x):
        sample = self.forge_objects.vae.first_stage_model.process_out(x)
        return (self.forge_objects.vae.decode(sample).movedim(-1, 1) * 2.0 - 1.0).to(x)


class StableDiffusionXL(_SDXLBase):
    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        clip = CLIP(model_dict={"clip_l": huggingface_components["text_encoder"],
                                "clip_g": huggingface_components["text_encoder_2"]},
                    tokenizer_dict={"clip_l": huggingface_components["tokenizer"],
                                    "clip_g": huggingface_components["tokenizer_2"]})
        vae = VAE(model=huggingface_components["vae"])
        neo = os.environ.get("FORGE_STANDIN_FLAVOR", "neo") == "neo"
        if neo and estimated_config.sampling_settings.pop("RF", False):
            from backend.modules.k_prediction import PredictionDiscreteFlow

            unet = UnetPatcher.from_model(model=huggingface_components["unet"], diffusers_scheduler=None,
                                          k_predictor=PredictionDiscreteFlow(estimated_config), config=estimated_config)
            self.use_shift = True
        else:
            unet = UnetPatcher.from_model(model=huggingface_components["unet"], config=estimated_config,
                                          diffusers_scheduler=huggingface_components["scheduler"])
            self.use_shift = False
        self.text_processing_engine_l = _engine(clip, "clip_l", estimated_config, pooled=False)
        self.text_processing_engine_g = _engine(clip, "clip_g", estimated_config, pooled=True)
        self.embedder = Timestep(estimated_config.size_embed_dim)
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=vae, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.is_sdxl = True

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine_l.clip_skip = clip_skip
        self.text_processing_engine_g.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        cond_l = self.text_processing_engine_l(prompt)
        cond_g, pooled = self.text_processing_engine_g(prompt)
        flat = self._size_embedding(prompt, pooled.shape[0], pooled)
        return dict(crossattn=torch.cat([cond_l, cond_g], dim=2), vector=torch.cat([pooled, flat], dim=1))


class StableDiffusionXLRefiner(_SDXLBase):
    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        clip = CLIP(model_dict={"clip_g": huggingface_components["text_encoder"]},
                    tokenizer_dict={"clip_g": huggingface_components["tokenizer"]})
        vae = VAE(model=huggingface_components["vae"])
        unet = UnetPatcher.from_model(model=huggingface_components["unet"],
                                      diffusers_scheduler=huggingface_components["scheduler"], config=estimated_config)
        self.text_processing_engine_g = _engine(clip, "clip_g", estimated_config, pooled=True)
        self.embedder = Timestep(estimated_config.size_embed_dim)
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=vae, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.is_sdxl = True
