"""Stable Diffusion architectures as diffusers configs, real-size and tiny.

Used to build random-weight models (the benchmark: a random SD1.5 UNet costs
exactly what the real one costs; the tests: tiny models of the same shape
family) and to give single-file checkpoints a config offline. Requires
diffusers and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .adapter import ModelFamily

ARCHITECTURES = ("tiny-sd1", "tiny-sd2", "tiny-sdxl", "sd15", "sd21", "sdxl")

_CROSS_DOWN, _DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
_CROSS_UP, _UP = "CrossAttnUpBlock2D", "UpBlock2D"


@dataclass
class Architecture:
    """Everything needed to instantiate one model family at one size."""

    name: str
    family: ModelFamily
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: list[dict[str, Any]]
    scheduler: dict[str, Any] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return self.unet["sample_size"] * 2 ** (len(self.vae["block_out_channels"]) - 1)


def _scheduler(prediction_type: str = "epsilon") -> dict[str, Any]:
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": prediction_type,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def _vae(channels: tuple[int, ...], scaling: float, sample_size: int) -> dict[str, Any]:
    blocks = len(channels)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * blocks,
        "up_block_types": ["UpDecoderBlock2D"] * blocks,
        "block_out_channels": list(channels),
        "layers_per_block": 2 if channels[0] >= 128 else 1,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": sample_size,
        "scaling_factor": scaling,
        "force_upcast": scaling != 0.18215,
    }


def _clip(width: int, layers: int, heads: int, act: str, projection: int, with_projection=False) -> dict[str, Any]:
    return {
        "vocab_size": 49408,
        "hidden_size": width,
        "intermediate_size": width * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": projection,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
        "with_projection": with_projection,
    }


def get_architecture(name: str) -> Architecture:
    """Look up one of ``ARCHITECTURES``."""
    if name == "sd15":
        return Architecture(
            name, ModelFamily.SD1,
            unet={
                "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                "block_out_channels": [320, 640, 1280, 1280],
                "down_block_types": [_CROSS_DOWN] * 3 + [_DOWN], "up_block_types": [_UP] + [_CROSS_UP] * 3,
                "cross_attention_dim": 768, "attention_head_dim": 8,
            },
            vae=_vae((128, 256, 512, 512), 0.18215, 512),
            text_encoders=[_clip(768, 12, 12, "quick_gelu", 768)],
            scheduler=_scheduler(),
        )
    if name == "sd21":
        return Architecture(
            name, ModelFamily.SD2,
            unet={
                "sample_size": 96, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                "block_out_channels": [320, 640, 1280, 1280],
                "down_block_types": [_CROSS_DOWN] * 3 + [_DOWN], "up_block_types": [_UP] + [_CROSS_UP] * 3,
                "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True,
            },
            vae=_vae((128, 256, 512, 512), 0.18215, 768),
            text_encoders=[_clip(1024, 23, 16, "gelu", 512)],
            scheduler=_scheduler("v_prediction"),
        )
    if name == "sdxl":
        return Architecture(
            name, ModelFamily.SDXL,
            unet={
                "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                "block_out_channels": [320, 640, 1280],
                "down_block_types": [_DOWN, _CROSS_DOWN, _CROSS_DOWN], "up_block_types": [_CROSS_UP, _CROSS_UP, _UP],
                "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
                "cross_attention_dim": 2048, "use_linear_projection": True,
                "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816,
            },
            vae=_vae((128, 256, 512, 512), 0.13025, 1024),
            text_encoders=[_clip(768, 12, 12, "quick_gelu", 768), _clip(1280, 32, 20, "gelu", 1280, True)],
            scheduler=_scheduler(),
        )
    tiny_unet = {
        "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": [32, 64], "norm_num_groups": 32,
        "down_block_types": [_DOWN, _CROSS_DOWN], "up_block_types": [_CROSS_UP, _UP], "attention_head_dim": 8,
    }
    tiny_vae = _vae((32, 32, 32, 32), 0.18215, 64)
    if name == "tiny-sd1":
        return Architecture(name, ModelFamily.SD1, unet={**tiny_unet, "cross_attention_dim": 32},
                            vae=tiny_vae, text_encoders=[_clip(32, 2, 4, "quick_gelu", 32)], scheduler=_scheduler())
    if name == "tiny-sd2":
        return Architecture(name, ModelFamily.SD2,
                            unet={**tiny_unet, "cross_attention_dim": 48, "use_linear_projection": True},
                            vae=tiny_vae, text_encoders=[_clip(48, 2, 4, "gelu", 32)],
                            scheduler=_scheduler("v_prediction"))
    if name == "tiny-sdxl":
        return Architecture(
            name, ModelFamily.SDXL,
            unet={**tiny_unet, "cross_attention_dim": 80, "use_linear_projection": True,
                  "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                  "projection_class_embeddings_input_dim": 6 * 8 + 32},
            vae={**_vae((32, 32, 32, 32), 0.13025, 64), "force_upcast": True},
            text_encoders=[_clip(32, 2, 4, "quick_gelu", 32), _clip(48, 2, 4, "gelu", 32, True)],
            scheduler=_scheduler(),
        )
    raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")


def build_pipeline(name: str, seed: int = 0, dtype=None):
    """A diffusers pipeline of architecture ``name`` with seeded random weights."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .clip_tokenizer import END_TOKEN, clip_tokenizer

    arch = get_architecture(name)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**arch.unet)
    vae = AutoencoderKL(**arch.vae)
    encoders = []
    for config in arch.text_encoders:
        config = dict(config)
        with_projection = config.pop("with_projection")
        model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
        encoders.append(model_class(CLIPTextConfig(**config)))
    scheduler = DDIMScheduler(**arch.scheduler)
    if arch.family == ModelFamily.SDXL:
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
            tokenizer=clip_tokenizer(END_TOKEN), tokenizer_2=clip_tokenizer("!"),
            unet=unet, scheduler=scheduler,
        )
    else:
        from diffusers import StableDiffusionPipeline

        pad = "!" if arch.family == ModelFamily.SD2 else END_TOKEN
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=encoders[0], tokenizer=clip_tokenizer(pad), unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
