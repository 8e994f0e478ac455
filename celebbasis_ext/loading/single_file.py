"""Single-file checkpoints: converted by diffusers' ``from_single_file`` with our config folder,
then checked tensor by tensor, because diffusers loads with ``strict=False``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..adapter import ModelFamily
from ..errors import UnsupportedModel
from .checkpoint_header import SD1_TEXT, SD2_TEXT, UNET, VAE, XL_TEXT_G, XL_TEXT_L, first_key
from .config_folder import config_folder_for
from .folder import quiet_deprecations
from .model_info import ModelInfo


def _diffusers_supports_config_folder() -> bool:
    import diffusers
    from packaging import version

    return version.parse(version.parse(diffusers.__version__).base_version) >= version.parse("0.28.0")


def load_single_file(path: Path, info: ModelInfo, header: dict, torch_dtype):
    """``from_single_file`` with our config folder, then the check that the weights came from the file."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if not _diffusers_supports_config_folder():
        import diffusers

        raise UnsupportedModel(
            f"loading single-file checkpoints offline needs diffusers 0.28 or newer (this is {diffusers.__version__}); "
            "upgrade diffusers or use a diffusers model folder"
        )
    config = config_folder_for(info)
    pipeline_class = StableDiffusionXLPipeline if info.family == ModelFamily.SDXL else StableDiffusionPipeline
    kwargs: dict[str, Any] = {"config": str(config), "local_files_only": True}
    if torch_dtype != torch.float32:  # fp32 is what the models are built in; naming it only adds warnings
        kwargs["torch_dtype"] = torch_dtype
    if info.family != ModelFamily.SDXL:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        with quiet_deprecations():
            pipe = pipeline_class.from_single_file(str(path), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "meta tensor" in message:  # newer diffusers fail here when weights are missing, older ones later
            raise _weights_not_loaded(path) from None
        raise UnsupportedModel(f"diffusers could not load {path.name}: {message[:300]}") from None
    _verify_weights(pipe, path, header, info)
    return pipe


def _sentinels(pipe, header: dict, info: ModelInfo) -> list[tuple[str, Any, str]]:
    """(description, loaded tensor, checkpoint key) pairs that must be equal after loading."""
    out: list[tuple[str, Any, str]] = []

    def add(what: str, tensor, *keys: str) -> None:
        key = first_key(header, *keys)
        if key is not None:
            out.append((what, tensor, key))
        else:
            raise UnsupportedModel(f"{Path(info.path).name} has no {keys[0]}: not a complete checkpoint")

    unet, vae = pipe.unet, pipe.vae
    add("UNet conv_in", unet.conv_in.weight, UNET + "input_blocks.0.0.weight")
    add("UNet conv_out", unet.conv_out.weight, UNET + "out.2.weight")
    mid_attention = unet.mid_block.attentions[0]
    add("UNet middle attention", mid_attention.transformer_blocks[0].attn2.to_k.weight,
        UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight")
    add("VAE decoder", vae.decoder.conv_out.weight, VAE + "decoder.conv_out.weight")
    add("VAE encoder", vae.encoder.conv_in.weight, VAE + "encoder.conv_in.weight")

    def hf_clip(encoder, prefix: str, label: str) -> None:
        layers = encoder.config.num_hidden_layers
        text = getattr(encoder, "text_model", encoder)
        add(f"{label} token embedding", encoder.get_input_embeddings().weight,
            prefix + "text_model.embeddings.token_embedding.weight", prefix + "embeddings.token_embedding.weight")
        add(f"{label} last layer", text.encoder.layers[layers - 1].mlp.fc2.weight,
            prefix + f"text_model.encoder.layers.{layers - 1}.mlp.fc2.weight",
            prefix + f"encoder.layers.{layers - 1}.mlp.fc2.weight")

    def open_clip(encoder, prefix: str, label: str) -> None:
        layers = encoder.config.num_hidden_layers
        text = getattr(encoder, "text_model", encoder)
        add(f"{label} token embedding", encoder.get_input_embeddings().weight, prefix + "token_embedding.weight")
        add(f"{label} last layer", text.encoder.layers[layers - 1].mlp.fc2.weight,
            prefix + f"transformer.resblocks.{layers - 1}.mlp.c_proj.weight")

    if info.family == ModelFamily.SD1:
        hf_clip(pipe.text_encoder, SD1_TEXT, "text encoder")
    elif info.family == ModelFamily.SD2:
        open_clip(pipe.text_encoder, SD2_TEXT, "text encoder")
    else:
        hf_clip(pipe.text_encoder, XL_TEXT_L, "CLIP-L")
        open_clip(pipe.text_encoder_2, XL_TEXT_G, "OpenCLIP-G")
    return out


def _weights_not_loaded(path: Path, which: str = "") -> UnsupportedModel:
    detail = f" ({which})" if which else ""
    return UnsupportedModel(f"{path.name}: some weights were not loaded from the file{detail}: not a complete "
                            "checkpoint, or a layout this loader does not know")


def _verify_weights(pipe, path: Path, header: dict, info: ModelInfo) -> None:
    """diffusers loads with strict=False: make sure the weights really came from the file."""
    import torch
    from safetensors import safe_open

    for module_name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, module_name, None)
        if module is None:
            continue
        for name, param in module.named_parameters():
            if param.device.type == "meta":
                raise _weights_not_loaded(path, f"{module_name}.{name}")
    with safe_open(str(path), framework="pt") as handle:
        for what, loaded, key in _sentinels(pipe, header, info):
            stored = handle.get_tensor(key)
            if tuple(stored.shape) != tuple(loaded.shape):
                stored = stored.reshape(loaded.shape) if stored.numel() == loaded.numel() else None
            if stored is None or not torch.equal(stored.to(loaded.dtype), loaded.detach().to("cpu")):
                raise UnsupportedModel(
                    f"{path.name}: the {what} weights did not load from the file; "
                    "its layout is not one this loader knows"
                )
