"""Diffusers model folders: recognised from ``model_index.json`` and the component configs, loaded
with ``from_pretrained(local_files_only=True, use_safetensors=True)``."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any, Optional

from ..adapter import ModelFamily
from ..errors import BadInput, ModelFilesMissing, UnsupportedModel
from .model_info import ModelInfo, check_in_channels
from .options import PREDICTION_TYPES


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise BadInput(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} is not a JSON object")
    return data


def inspect_folder(path: Path, prediction_type: Optional[str]) -> ModelInfo:
    """Recognise a diffusers folder from its ``model_index.json`` and configs (no weights read)."""
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
    check_in_channels(int(unet_config.get("in_channels", 4)), path.name)

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


def _folder_variant(path: Path) -> Optional[str]:
    """``fp16`` when the folder ships only ``*.fp16.safetensors`` weights."""
    unet = path / "unet"
    if (unet / "diffusion_pytorch_model.safetensors").is_file():
        return None
    if (unet / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    return None


def load_folder(path: Path, info: ModelInfo, torch_dtype):
    """``from_pretrained`` offline, safetensors only (pickled ``.bin`` weights are refused)."""
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
        with quiet_deprecations():
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
def quiet_deprecations():
    """Recent diffusers renamed ``torch_dtype`` to ``dtype`` (older ones know only the first): no nagging."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        yield
