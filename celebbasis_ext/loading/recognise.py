"""Recognise a single-file checkpoint from its header alone: family (key names), architecture
(tensor widths against ``architectures.py``) and prediction type (argument, marker key, YAML, file name)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..adapter import ModelFamily
from ..errors import BadInput, UnsupportedModel
from .checkpoint_header import (SD1_TEXT, SD2_TEXT, UNET, VAE, XL_REFINER_TEXT, XL_TEXT_G, XL_TEXT_L, count_indices,
                                first_key, read_safetensors_header)
from .model_info import ModelInfo, check_in_channels


def detect_family(header: dict, name: str) -> ModelFamily:
    """SD1, SD2 or SDXL from key names; every other kind of file refused with what it is."""
    keys = header.keys()
    if not keys:
        raise BadInput(f"{name} holds no tensors: not a Stable Diffusion checkpoint")
    sample = list(keys)
    if set(keys) <= {"emb_params", "clip_l", "clip_g", "string_to_param", "name", "step"} or "string_to_param" in keys:
        raise BadInput(f"{name} is a Textual-Inversion embedding, not a model checkpoint")
    has_unet = any(k.startswith(UNET) for k in keys)
    if not has_unet and any(k.startswith(("lora_", "lycoris_")) or ".lora_" in k or ".lora." in k or ".hada_" in k
                            or k.endswith((".alpha", ".lora_A.weight", ".lora_B.weight")) for k in sample):
        raise BadInput(f"{name} is a LoRA/LyCORIS file, not a full Stable Diffusion checkpoint")
    if any(k.startswith(XL_TEXT_G) for k in keys):
        if not any(k.startswith(XL_TEXT_L) for k in keys):
            raise UnsupportedModel(
                f"{name} has no CLIP-L text encoder (conditioner.embedders.0): not an SDXL base model")
        family = ModelFamily.SDXL
    elif any(k.startswith(XL_REFINER_TEXT) for k in keys):
        raise UnsupportedModel(f"{name} is an SDXL refiner (no CLIP-L text encoder): use an SDXL base model")
    elif any(k.startswith(SD2_TEXT) for k in keys):
        family = ModelFamily.SD2
    elif any(k.startswith(SD1_TEXT) for k in keys):
        family = ModelFamily.SD1
    elif has_unet and any(("joint_blocks." in k or "double_blocks." in k or "single_blocks." in k) for k in keys):
        raise UnsupportedModel(
            f"{name} looks like an SD3/Flux model: only Stable Diffusion 1.x, 2.x and SDXL are supported")
    elif has_unet:
        raise UnsupportedModel(f"{name} has UNet weights but no text encoder: only complete checkpoints can be loaded")
    elif any(k.startswith(("down_blocks.", "unet.", "text_model.", "mid_block.")) for k in keys):
        raise BadInput(f"{name} is one diffusers component, not a checkpoint: pass the whole diffusers folder instead")
    elif any(k.startswith(("encoder.down.", "decoder.up.", "encoder.conv_in")) for k in keys):
        raise BadInput(f"{name} is a VAE file, not a Stable Diffusion checkpoint")
    else:
        raise BadInput(f"{name} is not a Stable Diffusion checkpoint (no UNet or text-encoder weights)")
    if not has_unet:
        raise UnsupportedModel(f"{name} has no UNet weights (model.diffusion_model.*): not a complete checkpoint")
    if "edm_mean" in keys or "edm_vpred.sigma_max" in keys:
        raise UnsupportedModel(
            f"{name} is an EDM model (Playground v2.5 style): only epsilon and v-prediction models work")
    if not any(k.startswith(VAE) for k in keys):
        raise UnsupportedModel(f"{name} has no VAE weights (first_stage_model.*): not a complete checkpoint")
    return family


def _text_layers_ldm(header: dict, family: ModelFamily) -> list[tuple[int, int]]:
    """(width, layer count) per text encoder, read from the checkpoint."""
    out = []
    if family == ModelFamily.SD1 or family == ModelFamily.SDXL:
        prefix = SD1_TEXT if family == ModelFamily.SD1 else XL_TEXT_L
        token = first_key(header, prefix + "text_model.embeddings.token_embedding.weight",
                           prefix + "embeddings.token_embedding.weight")
        layers = max(count_indices(header, prefix + "text_model.encoder.layers."),
                     count_indices(header, prefix + "encoder.layers."))
        out.append((header[token]["shape"][1] if token else 0, layers))
    if family in (ModelFamily.SD2, ModelFamily.SDXL):
        prefix = SD2_TEXT if family == ModelFamily.SD2 else XL_TEXT_G
        token = first_key(header, prefix + "token_embedding.weight")
        layers = count_indices(header, prefix + "transformer.resblocks.")
        out.append((header[token]["shape"][1] if token else 0, layers))
    return out


def signature_of_checkpoint(header: dict, family: ModelFamily) -> dict:
    """The sizes that tell architectures apart, read from the header."""
    unet_in = header.get(UNET + "input_blocks.0.0.weight")
    cross = next((header[k]["shape"][1] for k in header
                  if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), 0)
    adm = header.get(UNET + "label_emb.0.0.weight")
    vae_in = header.get(VAE + "encoder.conv_in.weight")
    return {
        "unet_channels": unet_in["shape"][0] if unet_in else 0,
        "unet_input_blocks": count_indices(header, UNET + "input_blocks."),
        "cross_attention_dim": cross,
        "adm_in": adm["shape"][1] if adm else 0,
        "vae_channels": vae_in["shape"][0] if vae_in else 0,
        "vae_levels": count_indices(header, VAE + "encoder.down."),
        "text": _text_layers_ldm(header, family),
    }


def _signature_of_architecture(arch) -> dict:
    unet = arch.unet
    levels = len(unet["block_out_channels"])
    per_block = unet["layers_per_block"]
    return {
        "unet_channels": unet["block_out_channels"][0],
        "unet_input_blocks": 1 + levels * per_block + (levels - 1),
        "cross_attention_dim": unet["cross_attention_dim"],
        "adm_in": unet.get("projection_class_embeddings_input_dim", 0) or 0,
        "vae_channels": arch.vae["block_out_channels"][0],
        "vae_levels": len(arch.vae["block_out_channels"]),
        "text": [(c["hidden_size"], c["num_hidden_layers"]) for c in arch.text_encoders],
    }


def _signatures_match(found: dict, expected: dict, family: ModelFamily) -> bool:
    for key in ("unet_channels", "unet_input_blocks", "cross_attention_dim", "adm_in", "vae_channels", "vae_levels"):
        if found[key] != expected[key]:
            return False
    if len(found["text"]) != len(expected["text"]):
        return False
    for index, ((width, layers), (want_width, want_layers)) in enumerate(zip(found["text"], expected["text"])):
        if width != want_width:
            return False
        # SD2 uses OpenCLIP's penultimate layer: its files hold one block more than diffusers' encoder.
        openclip_sd2 = family == ModelFamily.SD2 and index == 0
        if layers != want_layers and not (openclip_sd2 and layers == want_layers + 1):
            return False
    return True


def match_architecture(header: dict, family: ModelFamily, requested: Optional[str], name: str) -> str:
    """The ``architectures.py`` name whose sizes the checkpoint has (or ``requested``, checked)."""
    from ..architectures import ARCHITECTURES, get_architecture

    found = signature_of_checkpoint(header, family)
    check_in_channels(header[UNET + "input_blocks.0.0.weight"]["shape"][1]
                       if UNET + "input_blocks.0.0.weight" in header else 4, name)
    if requested:
        if requested not in ARCHITECTURES:
            raise BadInput(f"unknown architecture {requested!r}: choose one of {', '.join(ARCHITECTURES)}")
        candidates = [requested]
    else:
        candidates = list(ARCHITECTURES)
    matches = []
    for candidate in candidates:
        arch = get_architecture(candidate)
        if arch.family != family:
            if requested:
                raise BadInput(f"{name} is an {family.value.upper()} checkpoint, not {requested}")
            continue
        if _signatures_match(found, _signature_of_architecture(arch), family):
            matches.append(candidate)
    if not matches:
        widths = "/".join(str(w) for w, _ in found["text"])
        what = (f"UNet width {found['unet_channels']}, text width {widths}, "
                f"{found['unet_input_blocks']} UNet input blocks")
        if requested:
            raise UnsupportedModel(f"{name} does not have the sizes of {requested} ({what})")
        raise UnsupportedModel(
            f"{name} is an {family.value.upper()} checkpoint of an unknown size ({what}): "
            "pruned or distilled UNets are not supported"
        )
    return matches[0]


_V_HINT = re.compile(r"768|(^|[^a-z0-9])v([^a-z0-9]|$)|v[-_ ]?pred|vpred|v[-_ ]?param")
_EPS_HINT = re.compile(r"512|(^|[^a-z0-9])base([^a-z0-9]|$)|eps(ilon)?([^a-z]|$)")


def _yaml_parameterization(path: Path) -> Optional[str]:
    """``v_prediction``/``epsilon`` from an A1111-style config beside the checkpoint, if any."""
    for candidate in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return None
            if re.search(r"^\s*parameterization\s*:\s*[\"']?v[\"']?\s*$", text, re.MULTILINE):
                return "v_prediction"
            return "epsilon"
    return None


def decide_prediction(path: Path, family: ModelFamily, header: dict, requested: Optional[str]) -> tuple[str, str]:
    """(prediction type, where it came from): argument, marker key, YAML, file name, default."""
    if requested:
        return requested, "argument"
    if "v_pred" in header:
        return "v_prediction", "key"
    if family != ModelFamily.SD2:
        return "epsilon", "default"
    from_yaml = _yaml_parameterization(path)
    if from_yaml:
        return from_yaml, "yaml"
    stem = path.stem.lower()
    says_v, says_eps = bool(_V_HINT.search(stem)), bool(_EPS_HINT.search(stem))
    if says_v != says_eps:
        return ("v_prediction" if says_v else "epsilon"), "filename"
    return "v_prediction", "default"


def inspect_single_file(path: Path, prediction_type: Optional[str], architecture: Optional[str]):
    """(``ModelInfo``, header) of a single-file checkpoint, from its header alone."""
    header, _ = read_safetensors_header(path)
    family = detect_family(header, path.name)
    arch_name = match_architecture(header, family, architecture, path.name)
    prediction, source = decide_prediction(path, family, header, prediction_type)
    from ..architectures import get_architecture

    arch = get_architecture(arch_name)
    resolution = arch.resolution
    if arch_name == "sd21" and prediction == "epsilon":
        resolution = 512  # SD 2.x base models are 512 px epsilon; 768-v ones are v-prediction
    widths = tuple(width for width, _ in signature_of_checkpoint(header, family)["text"])
    info = ModelInfo(str(path), "single_file", family, arch_name, prediction, source, resolution, widths,
                     zero_terminal_snr="ztsnr" in header)
    return info, header
