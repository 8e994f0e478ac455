"""``backend.diffusion_engine.sd20`` (Forge main only; Neo has no SD2): ``StableDiffusion2``, one OpenCLIP-H
engine in Forge's HF layout under the key ``clip_h`` (1024 wide in the real model), clip skip 1, final layer norm;
the 768-v checkpoints predict v (from the scheduler config, as Forge reads it)."""

import torch

from backend import memory_management
from backend.args import dynamic_args
from backend.diffusion_engine.sd15 import StableDiffusion
from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE
from backend.text_processing.classic_engine import ClassicTextProcessingEngine


class StableDiffusion2(ForgeDiffusionEngine):
    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        clip = CLIP(model_dict={"clip_h": huggingface_components["text_encoder"]},
                    tokenizer_dict={"clip_h": huggingface_components["tokenizer"]})
        vae = VAE(model=huggingface_components["vae"])
        unet = UnetPatcher.from_model(model=huggingface_components["unet"],
                                      diffusers_scheduler=huggingface_components["scheduler"], config=estimated_config)
        self.text_processing_engine = ClassicTextProcessingEngine(
            text_encoder=clip.cond_stage_model.clip_h, tokenizer=clip.tokenizer.clip_h,
            embedding_dir=dynamic_args["embedding_dir"], embedding_key="clip_h",
            embedding_expected_shape=estimated_config.embedding_width, text_projection=False,
            minimal_clip_skip=1, clip_skip=1, return_pooled=False, final_layer_norm=True)
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=vae, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.is_sd2 = True

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        return self.text_processing_engine(prompt)

    # the VAE side is SD1's
    encode_first_stage = StableDiffusion.encode_first_stage
    decode_first_stage = StableDiffusion.decode_first_stage
