"""The user's settings, the presets, and the options a run may take on top of them.

Pure functions over ``ServiceSettings``: the front (``CelebBasisService``)
reads the settings anew for every call, so a host whose settings page changed
is honoured at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import BadInput
from ..pipeline import FACE_ENCODERS
from ..tuning import MODES, TuneOptions

#: Preset name -> the options it sets (everything else keeps TuneOptions' defaults).
PRESETS: dict[str, dict[str, Any]] = {
    "Fast": {"steps": 200},
    "Balanced": {"steps": 400},
    "Best": {"steps": 800},
}
DEFAULT_PRESET = "Balanced"

#: Options a caller may set besides the preset (front ends expose a subset).
TUNABLE_OPTIONS = ("steps", "learning_rate", "seed", "mode", "batch_size", "dtype", "resolution", "pool_size",
                   "report_every", "augment", "gradient_checkpointing", "views", "loss_mask")
_WHOLE_NUMBER_OPTIONS = ("steps", "seed", "batch_size", "resolution", "pool_size", "report_every")


@dataclass
class ServiceSettings:
    """The user's settings (the WebUI's "CelebBasis" section, or the standalone UI's flags)."""

    face_encoder: str = "auto"
    models_dir: Optional[str] = None
    allow_download: bool = False
    default_preset: str = DEFAULT_PRESET
    save_fp16: bool = False
    names_file: Optional[str] = None
    basis_cache_dir: Optional[str] = None
    webui_root: Optional[str] = None
    preview_count: int = 4
    preview_steps: int = 20
    #: TuneOptions every run starts from, under the preset and the caller's options (e.g. a
    #: smaller ``pool_size`` or ``resolution`` for tiny test models).
    tune_defaults: dict = field(default_factory=dict)


def presets() -> dict[str, TuneOptions]:
    return {name: TuneOptions(**values) for name, values in PRESETS.items()}


def default_preset(settings: ServiceSettings) -> str:
    preset = settings.default_preset
    return preset if preset in PRESETS else DEFAULT_PRESET


def resolve_face_encoder(settings: ServiceSettings, face_encoder: Optional[str] = None) -> str:
    """``face_encoder`` as asked (empty or "default": the settings'), checked against the known ones."""
    kind = (face_encoder or "").strip().lower()
    if kind in ("", "default"):
        kind = (settings.face_encoder or "auto").strip().lower()
    if kind not in FACE_ENCODERS:
        raise BadInput(f"unknown face encoder {kind!r}: choose one of {', '.join(FACE_ENCODERS)}")
    return kind


def build_options(settings: ServiceSettings, preset: Optional[str] = None, options: Optional[dict] = None,
                  face_encoder: Optional[str] = None) -> tuple[TuneOptions, str]:
    """The preset's TuneOptions with ``options`` on top, validated; and the face encoder to use."""
    preset = preset or default_preset(settings)
    if preset not in PRESETS:
        raise BadInput(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    values = {**settings.tune_defaults, **PRESETS[preset]}
    for key, value in (options or {}).items():
        if key not in TUNABLE_OPTIONS:
            raise BadInput(f"unknown option {key!r}: use {', '.join(TUNABLE_OPTIONS)}")
        if value is None or (key in ("mode", "views", "loss_mask") and value in ("", "auto", "default")):
            continue
        if key in _WHOLE_NUMBER_OPTIONS and isinstance(value, float) and math.isfinite(value) \
                and value.is_integer():
            value = int(value)  # sliders and number boxes hand over floats
        values[key] = value
    kind = resolve_face_encoder(settings, face_encoder)
    if "mode" not in values:
        values["mode"] = "direct" if kind == "none" else "paper"
    if values["mode"] not in MODES:
        raise BadInput(f"unknown mode {values['mode']!r}: choose {' or '.join(MODES)}")
    return TuneOptions(**values).validate(), kind


__all__ = ["ServiceSettings", "PRESETS", "DEFAULT_PRESET", "TUNABLE_OPTIONS", "presets", "default_preset",
           "resolve_face_encoder", "build_options"]
