"""Tuning variants to compare: ``preset=Fast``, ``steps=100,mode=direct``, ``views=photo,loss_mask=face``...

A variant is a comma-separated list of ``KEY=VALUE``. Keys are ``preset``,
``face_encoder`` and any field of ``TuneOptions`` (read from the dataclass,
so options added to the engine are accepted here without a change); values
are converted to the field's type. Precedence: TuneOptions' defaults < the
preset < options for every variant (``--set``) < the variant's own.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from ..errors import BadInput
from ..tuning import TuneOptions

EXTRA_KEYS = ("preset", "face_encoder")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def option_types() -> dict[str, object]:
    """TuneOptions' settable fields and their types (sequences such as caption templates are not settable)."""
    hints = typing.get_type_hints(TuneOptions)
    settable = {}
    for item in dataclasses.fields(TuneOptions):
        kind = hints.get(item.name, str)
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) is typing.Union and len(args) == 1:
            kind = args[0]
        if kind in (int, float, bool, str):
            settable[item.name] = kind
    return settable


def _convert(key: str, text: str, kind) -> object:
    value = text.strip()
    if value.lower() in ("none", "") and key in _optional_fields():
        return None
    try:
        if kind is bool:
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(value)
        if kind is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
    except ValueError:
        expected = {bool: "true or false", int: "a whole number", float: "a number"}[kind]
        raise BadInput(f"tuning option {key}={text!r}: expected {expected}") from None
    return value


def _optional_fields() -> set:
    hints = typing.get_type_hints(TuneOptions)
    return {name for name, kind in hints.items() if type(None) in typing.get_args(kind)}


def parse_assignments(text: str, where: str) -> dict[str, object]:
    """``"a=1,b=x"`` -> {"a": 1, "b": "x"} with keys checked and values converted."""
    types = option_types()
    values: dict[str, object] = {}
    for part in [p for p in text.split(",") if p.strip()]:
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise BadInput(f"{where}: write KEY=VALUE (e.g. preset=Fast or steps=400), not {part.strip()!r}")
        if key not in types and key not in EXTRA_KEYS:
            known = ", ".join(list(EXTRA_KEYS) + sorted(types))
            raise BadInput(f"{where}: unknown tuning option {key!r}; use one of: {known}")
        if key in values:
            raise BadInput(f"{where}: {key} is given twice")
        values[key] = value.strip() if key in EXTRA_KEYS else _convert(key, value, types[key])
    if not values:
        raise BadInput(f"{where}: empty; write KEY=VALUE")
    return values


@dataclass
class TuneVariant:
    """A labelled set of tuning options and the face encoder to tune with."""

    label: str
    options: TuneOptions
    face_encoder: str
    preset: str

    def describe(self) -> dict:
        settable = option_types()
        return {"preset": self.preset, "face_encoder": self.face_encoder,
                **{key: getattr(self.options, key) for key in sorted(settable)}}


def build_variants(specs: Sequence[str], common: Iterable[str] = (), preset: str = "Balanced",
                   face_encoder: str = "auto", presets: Optional[dict] = None,
                   encoders: Sequence[str] = ("auto", "insightface", "dlib", "none")) -> list[TuneVariant]:
    """The variants of ``--variant`` specs (one, from the common options alone, when none is given)."""
    if presets is None:
        from ..service import PRESETS as presets
    shared: dict[str, object] = {}
    for text in common:
        for key, value in parse_assignments(text, f"--set {text}").items():
            shared[key] = value
    variants, labels = [], set()
    for spec in list(specs) or [""]:
        own = parse_assignments(spec, f"--variant {spec}") if spec else {}
        values = {**shared, **own}
        chosen_preset = str(values.pop("preset", preset))
        if chosen_preset not in presets:
            raise BadInput(f"unknown preset {chosen_preset!r}: choose one of {', '.join(presets)}")
        encoder = str(values.pop("face_encoder", face_encoder)).lower()
        if encoder not in encoders:
            raise BadInput(f"unknown face encoder {encoder!r}: choose one of {', '.join(encoders)}")
        merged = {**presets[chosen_preset], **values}
        if encoder == "none":
            merged.setdefault("mode", "direct")
        try:
            options = TuneOptions(**merged).validate()
        except TypeError as error:  # a field the engine does not take after all
            raise BadInput(f"--variant {spec}: {error}") from None
        if encoder == "none" and options.mode != "direct":
            raise BadInput(f"--variant {spec}: face_encoder=none works only with mode=direct")
        label = ",".join(part.strip() for part in spec.split(",") if part.strip()) or f"preset={chosen_preset}"
        if label in labels:
            raise BadInput(f"the variant {label!r} is given twice")
        labels.add(label)
        variants.append(TuneVariant(label, options, encoder, chosen_preset))
    return variants
