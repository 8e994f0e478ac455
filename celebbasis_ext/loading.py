"""Load a Stable Diffusion model into diffusers, offline: a folder or one file.

``load_pipeline(model)`` takes

* a **diffusers folder** (``model_index.json`` beside ``unet/``, ``vae/``,
  ``text_encoder/`` ...), loaded with ``from_pretrained(local_files_only=True,
  use_safetensors=True)``; a Hugging Face id (``owner/name``) is looked up in
  the local Hugging Face cache only; or
* a **single-file ``.safetensors`` checkpoint** in the original layout
  (CompVis ``ldm`` for SD1.x/SD2.x, Stability ``sgm`` for SDXL), the files
  WebUIs use. Only the safetensors header is read to recognise it: the family
  from the key names (``conditioner.embedders.1`` -> SDXL,
  ``cond_stage_model.model`` -> SD2, ``cond_stage_model.transformer`` -> SD1),
  the architecture by comparing tensor widths with those in
  ``architectures.py`` (SD1.5, SD2.1, SDXL and the tiny test models). A
  diffusers config folder for that architecture (configs, scheduler and the
  CLIP tokenizer files from ``clip_tokenizer``) is written once into the cache
  and handed to diffusers' ``from_single_file(path, config=folder,
  local_files_only=True)``, which converts the weights. Nothing is downloaded.
  A few tensors are then compared with the file, because diffusers loads
  with ``strict=False`` and would leave a block it did not recognise random.

Prediction type. Keys cannot tell an SD2 768-v model from a 512 epsilon one,
so for SD2 single files the order is: the ``prediction_type`` argument, an
A1111-style ``NAME.yaml`` beside the file (``parameterization: "v"``), the
file name (``768``, ``-v``, ``v-pred`` mean v; ``512``, ``base`` mean
epsilon), then v-prediction at 768 px, because SD 2.1-768-v and its fine-tunes
are what SD2 users mostly have. SD1 and SDXL are epsilon unless the argument
says otherwise or the file carries the ``v_pred`` marker key (SDXL v-pred
fine-tunes; ``ztsnr`` there also turns on the zero-terminal-SNR schedule).
For folders the scheduler config decides; the argument overrides it too.

Device ``auto``: cuda, then mps, then cpu. Dtype ``auto``: fp32 on CPU,
fp16 on CUDA and MPS, except SD2 on a bf16-capable GPU (bf16: SD 2.1 overflows
in fp16). The safety checker is never loaded (as in the WebUIs). Single files
need diffusers 0.28+ (``config=`` on ``from_single_file``); folders load with
any supported diffusers.

Refused with one-line messages: pickles (``.ckpt``/``.pt``/``.bin``/...),
truncated or corrupt files, LoRAs, embeddings and other non-checkpoints,
SD3/Flux and EDM models, inpainting and instruct-pix2pix UNets, the SDXL
refiner, and any checkpoint whose sizes match no known architecture (pass
``architecture=`` for a tiny test model under another name).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .adapter import ModelFamily
from .errors import BadInput, ModelFilesMissing, UnsupportedModel

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
PREDICTION_TYPES = ("epsilon", "v_prediction")
#: Bumped whenever the written config folders change shape.
_CONFIG_FORMAT = 1

_UNET = "model.diffusion_model."
_VAE = "first_stage_model."
_SD1_TEXT = "cond_stage_model.transformer."
_SD2_TEXT = "cond_stage_model.model."
_XL_TEXT_L = "conditioner.embedders.0.transformer."
_XL_TEXT_G = "conditioner.embedders.1.model."
_XL_REFINER_TEXT = "conditioner.embedders.0.model."


# --------------------------------------------------------------------------- options
def resolve_device(device: Any = "auto"):
    """``auto`` -> cuda, then mps, then cpu; an explicit device must be available."""
    import torch

    name = str(device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError):
        raise BadInput(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BadInput("device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise BadInput(f"there is no {resolved}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise BadInput("device mps was asked for but this PyTorch has no MPS support; use --device cpu or auto")
    return resolved


_DTYPE_NAMES = {
    "fp32": "float32", "float32": "float32", "float": "float32", "full": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}


def resolve_dtype(dtype: Any, device, family: Optional[ModelFamily] = None):
    """``auto``: fp32 on CPU; fp16 on CUDA and MPS, except SD2 on CUDA gets bf16 where
    the GPU has it (SD 2.1's attention overflows in fp16 and renders black)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype or "auto").lower()
    if name == "auto":
        if device.type == "cuda":
            if family == ModelFamily.SD2 and torch.cuda.is_bf16_supported():
                return torch.bfloat16
            return torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if name not in _DTYPE_NAMES:
        raise BadInput(f"unknown dtype {dtype!r}: use auto, fp32, fp16 or bf16")
    return getattr(torch, _DTYPE_NAMES[name])


def normalize_prediction_type(value: Optional[str]) -> Optional[str]:
    if value is None or str(value).lower() in ("", "auto"):
        return None
    name = str(value).lower().replace("-", "_")
    if name in ("v", "v_prediction", "vpred", "v_pred"):
        return "v_prediction"
    if name in ("eps", "epsilon", "noise"):
        return "epsilon"
    raise BadInput(f"unknown prediction type {value!r}: use auto, epsilon or v")


# --------------------------------------------------------------------------- model info
@dataclass
class ModelInfo:
    """What is known about a model before (or after) loading its weights."""

    path: str
    source: str  # "diffusers_folder" | "single_file"
    family: ModelFamily
    architecture: str  # an architectures.py name, or "" for a folder
    prediction_type: str
    prediction_type_source: str  # argument | scheduler | key | yaml | filename | default
    resolution: int
    text_widths: tuple = ()
    zero_terminal_snr: bool = False
    label: str = ""  # what the user called it, when not the path (a Hugging Face id)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        path = Path(self.path)
        return path.stem if path.is_file() else path.name

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "source": self.source,
            "family": self.family.value,
            "architecture": self.architecture,
            "prediction_type": self.prediction_type,
            "prediction_type_source": self.prediction_type_source,
            "resolution": self.resolution,
            "text_encoder_widths": list(self.text_widths),
        }


def describe_model(model, *, prediction_type: Optional[str] = None, architecture: Optional[str] = None) -> dict:
    """Family, prediction type, name and native resolution of a model.

    ``model`` is a path (folder or ``.safetensors``; only configs or the header
    are read, no weights) or a loaded diffusers pipeline.
    """
    if isinstance(model, (str, os.PathLike)):
        return inspect_model(model, prediction_type=prediction_type, architecture=architecture).as_dict()
    info = getattr(model, "celebbasis_model_info", None)
    if isinstance(info, ModelInfo):
        return info.as_dict()
    return _describe_pipeline(model)


def _describe_pipeline(pipe) -> dict:
    family = pipeline_family(pipe)
    unet_config = pipe.unet.config
    scale = getattr(pipe, "vae_scale_factor", 8)
    widths = [pipe.text_encoder.get_input_embeddings().weight.shape[-1]]
    if family == ModelFamily.SDXL:
        widths.append(pipe.text_encoder_2.get_input_embeddings().weight.shape[-1])
    name_or_path = str(getattr(pipe, "name_or_path", "") or pipe.config.get("_name_or_path", "") or "")
    return {
        "name": Path(name_or_path).stem if name_or_path else "",
        "path": name_or_path,
        "source": "pipeline",
        "family": family.value,
        "architecture": "",
        "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        "prediction_type_source": "scheduler",
        "resolution": int(unet_config.sample_size) * int(scale),
        "text_encoder_widths": widths,
    }


def pipeline_family(pipe) -> ModelFamily:
    """SDXL when the pipeline has a second text encoder; SD2 when the first is OpenCLIP (GELU)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return ModelFamily.SDXL
    act = getattr(pipe.text_encoder.config, "hidden_act", "quick_gelu")
    return ModelFamily.SD2 if act == "gelu" else ModelFamily.SD1


def inspect_model(model, *, prediction_type: Optional[str] = None, architecture: Optional[str] = None) -> ModelInfo:
    """Recognise ``model`` without loading weights; raise BadInput/UnsupportedModel if unusable."""
    path = _check_path(model)
    if path.is_dir():
        info = _inspect_folder(path, normalize_prediction_type(prediction_type))
    else:
        info = _inspect_single_file(path, normalize_prediction_type(prediction_type), architecture)[0]
    info.label = _label(model, path)
    return info


def _label(model, path: Path) -> str:
    return "" if Path(os.path.expanduser(str(model))) == path else str(model)


def _check_path(model) -> Path:
    if model is None or str(model).strip() == "":
        raise BadInput("no model given: pass a diffusers folder or a .safetensors checkpoint")
    path = Path(os.path.expanduser(str(model)))
    if not path.exists():
        cached = _hub_cache_folder(str(model))
        if cached is None:
            raise BadInput(f"model not found: {path}")
        path = cached
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise BadInput(
                f"{path.name} is a pickled checkpoint: convert it to .safetensors: pickled checkpoints are never loaded"
            )
        if suffix != ".safetensors":
            raise BadInput(f"{path.name}: a model must be a diffusers folder or a .safetensors checkpoint")
    return path


def _hub_cache_folder(name: str) -> Optional[Path]:
    """``owner/name`` of a diffusers model already in the Hugging Face cache (never downloads)."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) or os.path.isabs(name):
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, no hub library, malformed: all mean "not there"
        return None
    return folder if (folder / "model_index.json").is_file() else None


# --------------------------------------------------------------------------- folders
def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise BadInput(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} is not a JSON object")
    return data


def _inspect_folder(path: Path, prediction_type: Optional[str]) -> ModelInfo:
    index_file = path / "model_index.json"
    if not index_file.is_file():
        hint = ""
        if any(path.glob("*.safetensors")):
            hint = " (to load a .safetensors checkpoint, pass the file itself)"
        raise BadInput(f"{path} has no model_index.json: not a diffusers model folder{hint}")
    index = _read_json(index_file)
    class_name = str(index.get("_class_name", ""))

    def component(name: str) -> bool:
        value = index.get(name)
        return isinstance(value, list) and len(value) == 2 and value[0] is not None

    if not class_name.startswith("StableDiffusion") or not component("unet") or not component("vae"):
        raise UnsupportedModel(
            f"{path.name} is a {class_name or 'unknown'} model: only Stable Diffusion 1.x, 2.x and SDXL are supported"
        )
    if component("text_encoder_2"):
        if not component("text_encoder"):
            raise UnsupportedModel(
                f"{path.name} is an SDXL refiner (no CLIP-L text encoder): use an SDXL base model"
            )
        family = ModelFamily.SDXL
    elif component("text_encoder"):
        text_file = path / "text_encoder" / "config.json"
        text_config = _read_json(text_file) if text_file.is_file() else {}
        family = ModelFamily.SD2 if text_config.get("hidden_act") == "gelu" else ModelFamily.SD1
    else:
        raise UnsupportedModel(f"{path.name} has no text encoder: not a text-to-image Stable Diffusion model")

    unet_config_file = path / "unet" / "config.json"
    if not unet_config_file.is_file():
        raise ModelFilesMissing(f"{path.name} is missing unet/config.json")
    unet_config = _read_json(unet_config_file)
    _check_in_channels(int(unet_config.get("in_channels", 4)), path.name)

    scheduler_file = path / "scheduler" / "scheduler_config.json"
    scheduler_config = _read_json(scheduler_file) if scheduler_file.is_file() else {}
    source = "argument" if prediction_type else "scheduler"
    prediction = prediction_type or scheduler_config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise UnsupportedModel(f"{path.name} uses prediction type {prediction!r}: only epsilon and v are supported")

    vae_file = path / "vae" / "config.json"
    vae_levels = len(_read_json(vae_file).get("block_out_channels", [0, 0, 0, 0])) if vae_file.is_file() else 4
    resolution = int(unet_config.get("sample_size", 64)) * 2 ** (vae_levels - 1)
    widths = []
    for name in ("text_encoder", "text_encoder_2"):
        config_file = path / name / "config.json"
        if component(name) and config_file.is_file():
            widths.append(int(_read_json(config_file).get("hidden_size", 0)))
    return ModelInfo(str(path), "diffusers_folder", family, "", prediction, source, resolution, tuple(widths),
                     zero_terminal_snr=bool(scheduler_config.get("rescale_betas_zero_snr", False)))


def _check_in_channels(channels: int, name: str) -> None:
    if channels == 9:
        raise UnsupportedModel(
            f"{name} is an inpainting model (its UNet takes 9 input channels): use the base model it was made from"
        )
    if channels == 8:
        raise UnsupportedModel(f"{name} is an instruct-pix2pix model (8 input channels): use a text-to-image model")
    if channels != 4:
        raise UnsupportedModel(
            f"{name} has a UNet with {channels} input channels: only 4-channel text-to-image models work")


def _folder_variant(path: Path) -> Optional[str]:
    """``fp16`` when the folder ships only ``*.fp16.safetensors`` weights."""
    unet = path / "unet"
    if (unet / "diffusion_pytorch_model.safetensors").is_file():
        return None
    if (unet / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    return None


# --------------------------------------------------------------------------- single files
def read_safetensors_header(path: Path) -> tuple[dict, dict]:
    """``({key: {"dtype", "shape", "data_offsets"}}, metadata)`` from the header alone.

    Also checks the file is as long as the header says, so a truncated
    download is named as such instead of failing halfway through loading.
    """
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise BadInput(f"{name} is not a valid .safetensors file (empty or truncated)")
            (length,) = struct.unpack("<Q", head)
            if length <= 1 or length > min(size - 8, 200 * 1024 * 1024):
                raise BadInput(f"{name} is not a valid .safetensors file (bad header; truncated or corrupt?)")
            raw = handle.read(length)
    except OSError as error:
        raise BadInput(f"cannot read {name}: {error.strerror or error}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadInput(f"{name} is not a valid .safetensors file (unreadable header; truncated or corrupt?)") from None
    if not isinstance(header, dict):
        raise BadInput(f"{name} is not a valid .safetensors file (bad header)")
    metadata = header.pop("__metadata__", None) or {}
    end = 0
    for key, entry in header.items():
        try:
            begin, stop = entry["data_offsets"]
            entry["shape"] = [int(x) for x in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{name} is not a valid .safetensors file (bad entry {key!r})") from None
        end = max(end, int(stop))
    if size < 8 + length + end:
        raise BadInput(
            f"{name} is truncated ({size} bytes, the header describes {8 + length + end}): download or copy it again"
        )
    return header, metadata


def _first_key(keys, *candidates: str) -> Optional[str]:
    for key in candidates:
        if key in keys:
            return key
    return None


def _count_indices(keys, prefix: str) -> int:
    """Number of distinct N in ``prefix + "N."`` keys."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(match.group(1)) for key in keys if (match := pattern.match(key))}
    return len(found)


def _detect_family(header: dict, name: str) -> ModelFamily:
    keys = header.keys()
    if not keys:
        raise BadInput(f"{name} holds no tensors: not a Stable Diffusion checkpoint")
    sample = list(keys)
    if set(keys) <= {"emb_params", "clip_l", "clip_g", "string_to_param", "name", "step"} or "string_to_param" in keys:
        raise BadInput(f"{name} is a Textual-Inversion embedding, not a model checkpoint")
    has_unet = any(k.startswith(_UNET) for k in keys)
    if not has_unet and any(k.startswith(("lora_", "lycoris_")) or ".lora_" in k or ".lora." in k or ".hada_" in k
                            or k.endswith((".alpha", ".lora_A.weight", ".lora_B.weight")) for k in sample):
        raise BadInput(f"{name} is a LoRA/LyCORIS file, not a full Stable Diffusion checkpoint")
    if any(k.startswith(_XL_TEXT_G) for k in keys):
        if not any(k.startswith(_XL_TEXT_L) for k in keys):
            raise UnsupportedModel(
                f"{name} has no CLIP-L text encoder (conditioner.embedders.0): not an SDXL base model")
        family = ModelFamily.SDXL
    elif any(k.startswith(_XL_REFINER_TEXT) for k in keys):
        raise UnsupportedModel(f"{name} is an SDXL refiner (no CLIP-L text encoder): use an SDXL base model")
    elif any(k.startswith(_SD2_TEXT) for k in keys):
        family = ModelFamily.SD2
    elif any(k.startswith(_SD1_TEXT) for k in keys):
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
    if not any(k.startswith(_VAE) for k in keys):
        raise UnsupportedModel(f"{name} has no VAE weights (first_stage_model.*): not a complete checkpoint")
    return family


def _text_layers_ldm(header: dict, family: ModelFamily) -> list[tuple[int, int]]:
    """(width, layer count) per text encoder, read from the checkpoint."""
    out = []
    if family == ModelFamily.SD1 or family == ModelFamily.SDXL:
        prefix = _SD1_TEXT if family == ModelFamily.SD1 else _XL_TEXT_L
        token = _first_key(header, prefix + "text_model.embeddings.token_embedding.weight",
                           prefix + "embeddings.token_embedding.weight")
        layers = max(_count_indices(header, prefix + "text_model.encoder.layers."),
                     _count_indices(header, prefix + "encoder.layers."))
        out.append((header[token]["shape"][1] if token else 0, layers))
    if family in (ModelFamily.SD2, ModelFamily.SDXL):
        prefix = _SD2_TEXT if family == ModelFamily.SD2 else _XL_TEXT_G
        token = _first_key(header, prefix + "token_embedding.weight")
        layers = _count_indices(header, prefix + "transformer.resblocks.")
        out.append((header[token]["shape"][1] if token else 0, layers))
    return out


def _signature_of_checkpoint(header: dict, family: ModelFamily) -> dict:
    unet_in = header.get(_UNET + "input_blocks.0.0.weight")
    cross = next((header[k]["shape"][1] for k in header
                  if k.startswith(_UNET) and k.endswith("attn2.to_k.weight")), 0)
    adm = header.get(_UNET + "label_emb.0.0.weight")
    vae_in = header.get(_VAE + "encoder.conv_in.weight")
    return {
        "unet_channels": unet_in["shape"][0] if unet_in else 0,
        "unet_input_blocks": _count_indices(header, _UNET + "input_blocks."),
        "cross_attention_dim": cross,
        "adm_in": adm["shape"][1] if adm else 0,
        "vae_channels": vae_in["shape"][0] if vae_in else 0,
        "vae_levels": _count_indices(header, _VAE + "encoder.down."),
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


def _match_architecture(header: dict, family: ModelFamily, requested: Optional[str], name: str) -> str:
    from .architectures import ARCHITECTURES, get_architecture

    found = _signature_of_checkpoint(header, family)
    _check_in_channels(header[_UNET + "input_blocks.0.0.weight"]["shape"][1]
                       if _UNET + "input_blocks.0.0.weight" in header else 4, name)
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


def _decide_prediction(path: Path, family: ModelFamily, header: dict, requested: Optional[str]) -> tuple[str, str]:
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


def _inspect_single_file(path: Path, prediction_type: Optional[str], architecture: Optional[str]):
    header, _ = read_safetensors_header(path)
    family = _detect_family(header, path.name)
    arch_name = _match_architecture(header, family, architecture, path.name)
    prediction, source = _decide_prediction(path, family, header, prediction_type)
    from .architectures import get_architecture

    arch = get_architecture(arch_name)
    resolution = arch.resolution
    if arch_name == "sd21" and prediction == "epsilon":
        resolution = 512  # SD 2.x base models are 512 px epsilon; 768-v ones are v-prediction
    widths = tuple(width for width, _ in _signature_of_checkpoint(header, family)["text"])
    info = ModelInfo(str(path), "single_file", family, arch_name, prediction, source, resolution, widths,
                     zero_terminal_snr="ztsnr" in header)
    return info, header


# --------------------------------------------------------------------------- config folders
def _tokenizer_files(folder: Path, pad_token: str) -> None:
    from .clip_tokenizer import END_TOKEN, START_TOKEN, tokenizer_files_dir

    source = tokenizer_files_dir()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "vocab.json", folder / "vocab.json")
    shutil.copyfile(source / "merges.txt", folder / "merges.txt")
    special = {"bos_token": START_TOKEN, "eos_token": END_TOKEN, "unk_token": END_TOKEN, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _config_files(arch, info: ModelInfo) -> dict[str, dict]:
    """Relative path -> JSON content of the diffusers config folder for ``arch``."""
    import diffusers
    import transformers

    unet = {"_class_name": "UNet2DConditionModel", "_diffusers_version": diffusers.__version__, **arch.unet}
    vae = {"_class_name": "AutoencoderKL", "_diffusers_version": diffusers.__version__, **arch.vae}
    if arch.name == "sd21" and info.prediction_type == "epsilon":
        unet["sample_size"] = 64
        vae["sample_size"] = 512
    scheduler = {"_class_name": "DDIMScheduler", "_diffusers_version": diffusers.__version__, **arch.scheduler,
                 "prediction_type": info.prediction_type}
    if info.zero_terminal_snr:
        scheduler.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    files = {"unet/config.json": unet, "vae/config.json": vae, "scheduler/scheduler_config.json": scheduler}
    text_names = ["text_encoder", "text_encoder_2"][: len(arch.text_encoders)]
    index: dict[str, Any] = {"_diffusers_version": diffusers.__version__}
    for name, text in zip(text_names, arch.text_encoders):
        text = dict(text)
        class_name = "CLIPTextModelWithProjection" if text.pop("with_projection") else "CLIPTextModel"
        files[f"{name}/config.json"] = {"architectures": [class_name], "model_type": "clip_text_model",
                                        "torch_dtype": "float32", "transformers_version": transformers.__version__,
                                        **text}
        index[name] = ["transformers", class_name]
    index.update(unet=["diffusers", "UNet2DConditionModel"], vae=["diffusers", "AutoencoderKL"],
                 scheduler=["diffusers", "DDIMScheduler"], tokenizer=["transformers", "CLIPTokenizer"])
    if arch.family == ModelFamily.SDXL:
        index.update(_class_name="StableDiffusionXLPipeline", tokenizer_2=["transformers", "CLIPTokenizer"],
                     force_zeros_for_empty_prompt=True, image_encoder=[None, None], feature_extractor=[None, None])
    else:
        index.update(_class_name="StableDiffusionPipeline", safety_checker=[None, None],
                     feature_extractor=[None, None], requires_safety_checker=False, image_encoder=[None, None])
    files["model_index.json"] = index
    return files


def config_folder_for(info: ModelInfo) -> Path:
    """A diffusers config folder (no weights) for a recognised single file, made once in the cache."""
    from .architectures import get_architecture
    from .clip_tokenizer import END_TOKEN, cache_dir

    arch = get_architecture(info.architecture)
    files = _config_files(arch, info)
    digest = hashlib.sha256(json.dumps([_CONFIG_FORMAT, files], sort_keys=True, default=str).encode()).hexdigest()
    root = cache_dir() / "diffusers_configs"
    folder = root / f"{info.architecture}-{info.prediction_type}-{digest[:12]}"
    if (folder / "model_index.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for relative, content in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(content, indent=2), encoding="utf-8")
        first_pad = "!" if arch.family == ModelFamily.SD2 else END_TOKEN
        _tokenizer_files(staging / "tokenizer", first_pad)
        if arch.family == ModelFamily.SDXL:
            _tokenizer_files(staging / "tokenizer_2", "!")
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / "model_index.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


# --------------------------------------------------------------------------- loading
def load_pipeline(
    model: Union[str, os.PathLike],
    device: Any = "auto",
    dtype: Any = "auto",
    *,
    prediction_type: Optional[str] = None,
    architecture: Optional[str] = None,
):
    """Load a diffusers ``StableDiffusionPipeline``/``StableDiffusionXLPipeline`` offline.

    ``model``: a diffusers folder or a single-file ``.safetensors`` checkpoint.
    ``device``: auto (cuda > mps > cpu), cpu, cuda[:N], mps. ``dtype``: auto
    (see ``resolve_dtype``), fp32, fp16, bf16 or a torch dtype.
    ``prediction_type``: auto/epsilon/v overrides what the file or folder says.
    ``architecture``: an ``architectures.py`` name for a single file whose
    sizes should not be guessed. The result carries ``celebbasis_model_info``
    (a ``ModelInfo``) and its progress bar is left as diffusers sets it.
    """
    requested_prediction = normalize_prediction_type(prediction_type)
    path = _check_path(model)
    torch_device = resolve_device(device)
    if path.is_dir():
        info = _inspect_folder(path, requested_prediction)
        torch_dtype = resolve_dtype(dtype, torch_device, info.family)
        pipe = _load_folder(path, info, torch_dtype)
    else:
        info, header = _inspect_single_file(path, requested_prediction, architecture)
        torch_dtype = resolve_dtype(dtype, torch_device, info.family)
        pipe = _load_single_file(path, info, header, torch_dtype)
    if requested_prediction and pipe.scheduler.config.get("prediction_type") != requested_prediction:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=requested_prediction)
    pipe = pipe.to(torch_device)
    if any(getattr(pipe, name, None) is not None and getattr(pipe, name).dtype != torch_dtype
           for name in ("unet", "vae", "text_encoder", "text_encoder_2")):
        pipe = pipe.to(dtype=torch_dtype)
    info.label = _label(model, path)
    pipe.celebbasis_model_info = info
    return pipe


def _load_folder(path: Path, info: ModelInfo, torch_dtype):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    kwargs: dict[str, Any] = {"local_files_only": True, "torch_dtype": torch_dtype, "use_safetensors": True}
    variant = _folder_variant(path)
    if variant:
        kwargs["variant"] = variant
    if info.family == ModelFamily.SDXL:
        pipeline_class = StableDiffusionXLPipeline
    else:
        pipeline_class = StableDiffusionPipeline
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        with _quiet_deprecations():
            return pipeline_class.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        lowered = message.lower()
        if "safetensors" in lowered or "no file named" in lowered or "does not appear" in lowered:
            raise ModelFilesMissing(
                f"{path.name}: weights missing or not in .safetensors form ({message[:200]}); "
                "pickled .bin weights are never loaded"
            ) from None
        raise BadInput(f"cannot load the diffusers folder {path.name}: {message[:300]}") from None


@contextlib.contextmanager
def _quiet_deprecations():
    """Recent diffusers renamed ``torch_dtype`` to ``dtype`` (older ones know only the first): no nagging."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        yield


def _diffusers_supports_config_folder() -> bool:
    import diffusers
    from packaging import version

    return version.parse(version.parse(diffusers.__version__).base_version) >= version.parse("0.28.0")


def _load_single_file(path: Path, info: ModelInfo, header: dict, torch_dtype):
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
        with _quiet_deprecations():
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
        key = _first_key(header, *keys)
        if key is not None:
            out.append((what, tensor, key))
        else:
            raise UnsupportedModel(f"{Path(info.path).name} has no {keys[0]}: not a complete checkpoint")

    unet, vae = pipe.unet, pipe.vae
    add("UNet conv_in", unet.conv_in.weight, _UNET + "input_blocks.0.0.weight")
    add("UNet conv_out", unet.conv_out.weight, _UNET + "out.2.weight")
    mid_attention = unet.mid_block.attentions[0]
    add("UNet middle attention", mid_attention.transformer_blocks[0].attn2.to_k.weight,
        _UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight")
    add("VAE decoder", vae.decoder.conv_out.weight, _VAE + "decoder.conv_out.weight")
    add("VAE encoder", vae.encoder.conv_in.weight, _VAE + "encoder.conv_in.weight")

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
        hf_clip(pipe.text_encoder, _SD1_TEXT, "text encoder")
    elif info.family == ModelFamily.SD2:
        open_clip(pipe.text_encoder, _SD2_TEXT, "text encoder")
    else:
        hf_clip(pipe.text_encoder, _XL_TEXT_L, "CLIP-L")
        open_clip(pipe.text_encoder_2, _XL_TEXT_G, "OpenCLIP-G")
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
