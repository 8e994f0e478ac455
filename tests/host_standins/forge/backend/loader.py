"""``backend.loader.forge_loader``: build the engine for a checkpoint, entirely under ``torch.inference_mode``.

As in Forge, every module is constructed and its weights are set inside
``torch.inference_mode()`` (the decorator), so every parameter and buffer of
the loaded model is an inference tensor. The stand-in's "checkpoint" is a
file name ``tiny-<kind>.safetensors`` (kinds: sd15, sd20 (v-prediction; Forge main
only), sdxl, sdxl-refiner, sdxl-rf, sd15-inpaint, flux); weights are seeded random. ``storage_dtype``
(Diffusion in Low Bits) can be a torch dtype or "nf4"/"gguf".
"""

import os
import types

import torch

from backend import memory_management
from backend.nn.clip import CLIPTextModelCompat, IntegratedCLIP
from backend.nn.unet import IntegratedUNet2DConditionModel
from backend.nn.vae import IntegratedAutoencoderKL

CLIP_L, CLIP_G, CLIP_H, SIZE_EMBED_DIM = 32, 48, 40, 8


class EstimatedConfig:
    def __init__(self, kind):
        self.kind = kind
        self.sampling_settings = {"RF": True} if kind == "sdxl-rf" else {}
        self.size_embed_dim = SIZE_EMBED_DIM
        self.embedding_width = CLIP_L if kind.startswith("sd15") else CLIP_H if kind == "sd20" \
            else CLIP_L + CLIP_G

    def inpaint_model(self):
        return self.kind.endswith("inpaint")


def _clip(width, act, seed):
    from transformers import CLIPTextConfig

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, hidden_act=act, projection_dim=width,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    model = IntegratedCLIP(CLIPTextModelCompat, config, add_text_projection=True)
    with torch.no_grad():  # random CLIP weights: a non-zero final norm bias keeps conditioning finite
        model.transformer.text_model.final_layer_norm.bias.normal_(0.0, 0.1)
    return model


def _tokenizer(pad):
    from celebbasis_ext.clip_tokenizer import END_TOKEN, clip_tokenizer

    return clip_tokenizer(END_TOKEN if pad == "end" else pad)


def _unet(kind, storage_dtype, seed):
    torch.manual_seed(seed)
    xl = kind.startswith("sdxl")
    context = CLIP_G if kind == "sdxl-refiner" else (CLIP_L + CLIP_G if xl else CLIP_H if kind == "sd20" else CLIP_L)
    adm = CLIP_G + (5 if kind == "sdxl-refiner" else 6) * SIZE_EMBED_DIM
    model = IntegratedUNet2DConditionModel(in_channels=9 if kind.endswith("inpaint") else 4, context_dim=context,
                                           num_classes="sequential" if xl else None,
                                           adm_in_channels=adm if xl else None)
    if isinstance(storage_dtype, torch.dtype):
        model = model.to(storage_dtype)
    model.storage_dtype = storage_dtype or torch.float32
    model.computation_dtype = torch.float32
    model.load_device = memory_management.get_torch_device()
    model.offload_device = memory_management.unet_offload_device()
    model.initial_device = memory_management.get_torch_device()
    return model


def _scheduler(prediction_type="epsilon"):
    config = types.SimpleNamespace(prediction_type=prediction_type, beta_start=0.00085, beta_end=0.012,
                                   num_train_timesteps=1000, beta_schedule="scaled_linear")
    return types.SimpleNamespace(config=config)


@torch.inference_mode()
def forge_loader(sd, additional_state_dicts=None, storage_dtype=None):
    kind = os.path.basename(str(sd)).split(".")[0].removeprefix("tiny-")
    config = EstimatedConfig(kind)
    seed = sum(map(ord, kind))
    torch.manual_seed(seed)
    vae = IntegratedAutoencoderKL(scaling_factor=0.13025 if kind.startswith("sdxl") else 0.18215)
    components = {"vae": vae, "unet": _unet(kind, storage_dtype, seed + 1), "scheduler": _scheduler()}
    if kind == "flux":
        from backend.diffusion_engine.flux import Flux

        return Flux(config, components)
    if kind == "sdxl-refiner":
        from backend.diffusion_engine.sdxl import StableDiffusionXLRefiner

        components.update(text_encoder=_clip(CLIP_G, "gelu", seed + 3), tokenizer=_tokenizer("!"))
        return StableDiffusionXLRefiner(config, components)
    if kind.startswith("sdxl"):
        from backend.diffusion_engine.sdxl import StableDiffusionXL

        components.update(text_encoder=_clip(CLIP_L, "quick_gelu", seed + 2), tokenizer=_tokenizer("end"),
                          text_encoder_2=_clip(CLIP_G, "gelu", seed + 3), tokenizer_2=_tokenizer("!"))
        return StableDiffusionXL(config, components)
    if kind == "sd20":
        if os.environ.get("FORGE_STANDIN_FLAVOR") == "neo":
            raise ValueError("Failed to recognize model type!")  # Neo removed the SD2 engine
        from backend.diffusion_engine.sd20 import StableDiffusion2

        components.update(text_encoder=_clip(CLIP_H, "gelu", seed + 2), tokenizer=_tokenizer("!"),
                          scheduler=_scheduler("v_prediction"))
        return StableDiffusion2(config, components)
    from backend.diffusion_engine.sd15 import StableDiffusion

    components.update(text_encoder=_clip(CLIP_L, "quick_gelu", seed + 2), tokenizer=_tokenizer("end"))
    return StableDiffusion(config, components)
