"""What is known about a model: ``ModelInfo`` for files and folders, and the same read off a loaded pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..adapter import ModelFamily
from ..errors import UnsupportedModel


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

def describe_pipeline(pipe) -> dict:
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


def check_in_channels(channels: int, name: str) -> None:
    """Refuse inpainting (9), instruct-pix2pix (8) and other non-4-channel UNets by name."""
    if channels == 9:
        raise UnsupportedModel(
            f"{name} is an inpainting model (its UNet takes 9 input channels): use the base model it was made from"
        )
    if channels == 8:
        raise UnsupportedModel(f"{name} is an instruct-pix2pix model (8 input channels): use a text-to-image model")
    if channels != 4:
        raise UnsupportedModel(
            f"{name} has a UNet with {channels} input channels: only 4-channel text-to-image models work")
