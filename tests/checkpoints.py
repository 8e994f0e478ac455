"""Write tiny models to disk the ways users have them, and broken files to refuse.

* ``write_diffusers_folder``: ``pipe.save_pretrained`` (safetensors).
* ``write_single_file``: one ``.safetensors`` in the original key layout
  (CompVis ldm for SD1/SD2, Stability sgm for SDXL), made by the
  diffusers -> original converter below. The loader reads these files with
  diffusers' own original -> diffusers converter, so a round trip that gives
  back the same weights checks both directions independently.
* Invalid files: a LoRA, a random tensor file, a truncated checkpoint, a
  pickled ``.ckpt``, an inpainting UNet (9 input channels), an SDXL refiner
  (OpenCLIP-G alone, no CLIP-L).

Used only by tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

UNET, VAE = "model.diffusion_model.", "first_stage_model."
SD1_TEXT, SD2_TEXT = "cond_stage_model.transformer.", "cond_stage_model.model."
XL_TEXT_L, XL_TEXT_G = "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."

_RESNET_NAMES = {  # diffusers ResnetBlock2D -> ldm ResBlock (UNet)
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}


def _rename_resnet(rest: str, names: dict) -> str:
    head, _, tail = rest.partition(".")
    return f"{names.get(head, head)}.{tail}"


def unet_to_ldm(state: dict, config) -> dict:
    """diffusers UNet2DConditionModel state dict -> ``model.diffusion_model.*`` keys."""
    per_level = config["layers_per_block"]
    up_has_attention = ["CrossAttn" in name for name in config["up_block_types"]]
    fixed = {
        "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
    }
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        target = None
        stem = ".".join(parts[:2])
        if stem in fixed:
            target = f"{fixed[stem]}.{'.'.join(parts[2:])}"
        elif parts[0] in fixed:
            target = f"{fixed[parts[0]]}.{'.'.join(parts[1:])}"
        elif parts[0] == "down_blocks":
            level, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            block = 1 + level * (per_level + 1)
            if kind == "resnets":
                target = f"input_blocks.{block + index}.0.{_rename_resnet(rest, _RESNET_NAMES)}"
            elif kind == "attentions":
                target = f"input_blocks.{block + index}.1.{rest}"
            elif kind == "downsamplers":
                target = f"input_blocks.{block + per_level}.0.op.{rest.partition('.')[2]}"
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                target = f"middle_block.{2 * index}.{_rename_resnet(rest, _RESNET_NAMES)}"
            else:
                target = f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            level, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            block = level * (per_level + 1)
            if kind == "resnets":
                target = f"output_blocks.{block + index}.0.{_rename_resnet(rest, _RESNET_NAMES)}"
            elif kind == "attentions":
                target = f"output_blocks.{block + index}.1.{rest}"
            elif kind == "upsamplers":
                slot = 2 if up_has_attention[level] else 1
                target = f"output_blocks.{block + per_level}.{slot}.{rest}"
        if target is None:
            raise KeyError(f"no ldm name for UNet key {key}")
        out[UNET + target] = value
    return out


def vae_to_ldm(state: dict, config) -> dict:
    """diffusers AutoencoderKL state dict -> ``first_stage_model.*`` keys."""
    levels = len(config["block_out_channels"])
    resnet_names = {"conv_shortcut": "nin_shortcut"}
    attention_names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        side = parts[0]
        if side in ("quant_conv", "post_quant_conv"):
            out[VAE + key] = value
            continue
        second = parts[1]
        if second in ("conv_in", "conv_out"):
            target = key
        elif second == "conv_norm_out":
            target = f"{side}.norm_out.{parts[2]}"
        elif second == "mid_block":
            kind, index = parts[2], int(parts[3])
            if kind == "resnets":
                target = f"{side}.mid.block_{index + 1}.{_rename_resnet('.'.join(parts[4:]), resnet_names)}"
            else:
                name = attention_names[parts[4]]
                target = f"{side}.mid.attn_1.{name}.{parts[-1]}"
                if name != "norm" and value.ndim == 2:
                    value = value[:, :, None, None]  # ldm's attention projections are 1x1 convolutions
        elif second in ("down_blocks", "up_blocks"):
            level = int(parts[2])
            ldm_level = level if second == "down_blocks" else levels - 1 - level
            group = "down" if second == "down_blocks" else "up"
            if parts[3] == "resnets":
                rest = _rename_resnet(".".join(parts[5:]), resnet_names)
                target = f"{side}.{group}.{ldm_level}.block.{parts[4]}.{rest}"
            else:  # downsamplers.0.conv / upsamplers.0.conv
                sampler = "downsample" if group == "down" else "upsample"
                target = f"{side}.{group}.{ldm_level}.{sampler}.{'.'.join(parts[5:])}"
        else:
            raise KeyError(f"no ldm name for VAE key {key}")
        out[VAE + target] = value
    return out


def clip_to_ldm(state: dict, prefix: str) -> dict:
    """transformers CLIPTextModel -> the HF layout the original checkpoints embed (``prefix + text_model.*``)."""
    out = {}
    for key, value in state.items():
        if key.startswith("text_projection"):
            continue
        name = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + name] = value
    positions = out[prefix + "text_model.embeddings.position_embedding.weight"].shape[0]
    device = "meta" if out[prefix + "text_model.embeddings.position_embedding.weight"].is_meta else "cpu"
    # real SD1 files carry the position ids too
    out[prefix + "text_model.embeddings.position_ids"] = torch.arange(positions, device=device)[None]
    return out


def open_clip_to_ldm(state: dict, prefix: str, extra_final_block: bool, projection_dim: int) -> dict:
    """transformers CLIP text model -> OpenCLIP's layout (``token_embedding``, ``transformer.resblocks.N``...).

    ``extra_final_block`` adds the last block SD2 files have and never use
    (SD2 reads OpenCLIP's penultimate layer).
    """
    state = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in state.items()}
    width = state["embeddings.token_embedding.weight"].shape[1]
    out = {
        prefix + "token_embedding.weight": state["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["final_layer_norm.weight"],
        prefix + "ln_final.bias": state["final_layer_norm.bias"],
        prefix + "logit_scale": torch.tensor(4.6052),
    }
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = state["text_projection.weight"].T.contiguous()
    else:
        token = out[prefix + "token_embedding.weight"]
        out[prefix + "text_projection"] = _random((width, projection_dim), 1, like=token)
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for layer in range(layers):
        source, target = f"encoder.layers.{layer}.", f"{prefix}transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            out[target + f"attn.in_proj_{kind}"] = torch.cat(
                [state[source + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")])
            for hf, oc in names.items():
                out[target + f"{oc}.{kind}"] = state[source + f"{hf}.{kind}"]
    if extra_final_block:
        last = f"{prefix}transformer.resblocks.{layers - 1}."
        for index, key in enumerate([k for k in out if k.startswith(last)]):
            out[key.replace(last, f"{prefix}transformer.resblocks.{layers}.")] = _random(out[key].shape, 2 + index,
                                                                                          like=out[key])
    return out


def _random(shape, seed: int, like: torch.Tensor) -> torch.Tensor:
    """Seeded noise, or a shape-only tensor when converting a model built on the meta device."""
    if like.is_meta:
        return torch.empty(shape, device="meta")
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def pipeline_to_ldm(pipe) -> dict:
    """A whole pipeline as one original-layout state dict (contiguous CPU tensors).

    ``pipe`` only needs ``unet``, ``vae`` and ``text_encoder``(``_2``): models
    built on the meta device give a shapes-only dict of a real-size checkpoint.
    """
    from celebbasis_ext.loading import pipeline_family
    from celebbasis_ext.adapter import ModelFamily

    family = pipeline_family(pipe)
    out = {}
    out.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    out.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if family == ModelFamily.SD1:
        out.update(clip_to_ldm(pipe.text_encoder.state_dict(), SD1_TEXT))
    elif family == ModelFamily.SD2:
        out.update(open_clip_to_ldm(pipe.text_encoder.state_dict(), SD2_TEXT, True,
                                    pipe.text_encoder.config.projection_dim))
    else:
        out.update(clip_to_ldm(pipe.text_encoder.state_dict(), XL_TEXT_L))
        out.update(open_clip_to_ldm(pipe.text_encoder_2.state_dict(), XL_TEXT_G, False,
                                    pipe.text_encoder_2.config.projection_dim))
    return {k: v if v.is_meta else v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def _save(state: dict, path: Path, metadata=None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata or {"format": "pt"})
    return path


def write_single_file(pipe, path) -> Path:
    return _save(pipeline_to_ldm(pipe), Path(path))


def write_diffusers_folder(pipe, folder) -> Path:
    folder = Path(folder)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


# ----------------------------------------------------------------------------- invalid files
def write_lora(path) -> Path:
    generator = torch.Generator().manual_seed(3)
    state = {}
    for name in ("lora_unet_down_blocks_1_attentions_0_proj_in", "lora_te_text_model_encoder_layers_0_mlp_fc1"):
        state[f"{name}.lora_down.weight"] = torch.randn(4, 32, generator=generator)
        state[f"{name}.lora_up.weight"] = torch.randn(32, 4, generator=generator)
        state[f"{name}.alpha"] = torch.tensor(4.0)
    return _save(state, Path(path), {"ss_network_module": "networks.lora"})


def write_random_tensors(path) -> Path:
    return _save({"weight": torch.zeros(3, 3), "something.else": torch.ones(2)}, Path(path))


def write_truncated(source, path) -> Path:
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path)


def write_pickle(path) -> Path:
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}}, str(path))
    return Path(path)


def write_inpainting(pipe, path) -> Path:
    state = pipeline_to_ldm(pipe)
    key = UNET + "input_blocks.0.0.weight"
    weight = state[key]
    state[key] = torch.cat([weight, torch.zeros(weight.shape[0], 5, *weight.shape[2:])], dim=1)  # 4 + 5 = 9
    return _save(state, Path(path))


def write_sdxl_refiner(pipe, path) -> Path:
    """The SDXL refiner layout: OpenCLIP-G as embedder 0 and no CLIP-L."""
    state = pipeline_to_ldm(pipe)
    state = {k: v for k, v in state.items() if not k.startswith(XL_TEXT_L)}
    state = {(k.replace(XL_TEXT_G, "conditioner.embedders.0.model.") if k.startswith(XL_TEXT_G) else k): v
             for k, v in state.items()}
    return _save(state, Path(path))


def file_size(path) -> int:
    return os.path.getsize(path)


# ----------------------------------------------------------------------------- real sizes, no memory
def meta_models(name: str):
    """A real-size architecture's models on the meta device (shapes, no storage)."""
    from types import SimpleNamespace

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from celebbasis_ext.architectures import get_architecture

    arch = get_architecture(name)
    with torch.device("meta"):
        models = {"unet": UNet2DConditionModel(**arch.unet), "vae": AutoencoderKL(**arch.vae)}
        for slot, config in zip(("text_encoder", "text_encoder_2"), arch.text_encoders):
            config = dict(config)
            model_class = CLIPTextModelWithProjection if config.pop("with_projection") else CLIPTextModel
            models[slot] = model_class(CLIPTextConfig(**config))
    return SimpleNamespace(**models)


def header_of(state: dict) -> dict:
    """What ``loading.read_safetensors_header`` returns for a file holding ``state``."""
    return {key: {"dtype": "F16", "shape": list(value.shape), "data_offsets": [0, 0]} for key, value in state.items()}
