"""Identity scores: how much a rendered face looks like the person in the reference photo.

One scorer for every number the project shows (``celebbasis_ext.likeness``:
cosine similarity of unit face features, the largest face of the render
against the reference photos' mean feature): ``celebbasis eval``, the tab's
preview likeness and the API's ``likeness`` use it with a judge chosen by
``choose_judge``; two-person images score each person by their best match
among the faces.

The judge is a face model other than the one the identity was tuned with,
when one is available (tuned with insightface -> judged with dlib, and the
other way round): a model that shaped the embedding would otherwise also
grade it. The two models' scales differ (the same person scores about 0.4 and
more with insightface's ArcFace, above 0.9 with dlib), so every score says
which judge gave it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..errors import BadInput, ModelFilesMissing
from ..likeness import cosine, face_features, reference_feature, unit_mean
from ..likeness import face_similarity as face_likeness

log = logging.getLogger(__name__)

JUDGES = ("auto", "insightface", "dlib")
FACE_MODELS = ("insightface", "dlib")


@dataclass
class Judge:
    """A loaded face model that scores renders, and which models the identities were tuned with."""

    encoder: Any
    name: str
    tuned_with: tuple[str, ...] = ()

    @property
    def independent(self) -> bool:
        """True when no identity it judges was tuned with this model."""
        return self.name not in self.tuned_with

    def describe(self) -> str:
        tuned = ", ".join("no face model" if kind == "none" else kind for kind in self.tuned_with if kind) \
            or "a face model not recorded in the files"
        if self.independent:
            return f"{self.name} (the identities were tuned with {tuned})"
        return (f"{self.name}, the same face model the identities were tuned with ({tuned}): no other was "
                "available, so the score may favour them")


def tuned_with(metadata: Mapping[str, str]) -> str:
    """The face model an embedding was tuned with, from its metadata ("" when not recorded)."""
    kind = str(metadata.get("face_encoder") or "").strip().lower()
    return kind if kind in FACE_MODELS or kind == "none" else ""


def choose_judge(tuned: Iterable[str], requested: str = "auto", *, load: Optional[Callable[[str], Any]] = None,
                 models_dir=None, allow_download: bool = False, webui_root=None) -> Judge:
    """The judge for identities tuned with ``tuned`` (face model names, "none" or "").

    ``requested`` "insightface" or "dlib" loads that one (its error if it
    cannot); "auto" prefers a model none of them was tuned with
    (insightface first), then any that loads. ``load(kind)`` defaults to
    ``face.encoders.load_face_encoder`` with the given folders.
    """
    requested = str(requested or "auto").strip().lower()
    if requested not in JUDGES:
        raise BadInput(f"unknown judge {requested!r}: choose one of {', '.join(JUDGES)}")
    tuned = tuple(sorted({str(kind or "").lower() for kind in tuned}))
    if load is None:
        def load(kind):
            from ..face.encoders import load_face_encoder

            return load_face_encoder(kind, models_dir=models_dir, allow_download=allow_download,
                                     webui_root=webui_root)
    if requested != "auto":
        return Judge(load(requested), requested, tuned)
    order = [kind for kind in FACE_MODELS if kind not in tuned] + [kind for kind in FACE_MODELS if kind in tuned]
    problems = []
    for kind in order:
        try:
            return Judge(load(kind), kind, tuned)
        except (ModelFilesMissing, BadInput, ImportError, OSError) as error:
            problems.append(f"{kind}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    raise ModelFilesMissing("no face model to judge likeness with (" + "; ".join(problems) + ")")


def readable_faces(image, encoder) -> list[np.ndarray]:
    """``likeness.face_features``, or no face when the model cannot read the image at all."""
    try:
        return face_features(image, encoder)
    except Exception:  # noqa: BLE001 - a render the model cannot read just has no score
        log.debug("face scoring failed for one image", exc_info=True)
        return []


def largest_face_likeness(features: Sequence[np.ndarray], reference) -> Optional[float]:
    """The single-person score: the largest face's cosine to the reference (None without a face), as
    ``face_likeness`` computes it from an image."""
    return cosine(features[0], reference) if features else None


def best_match_likeness(features: Sequence[np.ndarray], reference) -> Optional[float]:
    """The score of one person among several: their best cosine among the faces (None without a face)."""
    values = [value for value in (cosine(feature, reference) for feature in features) if value is not None]
    return max(values) if values else None


def photo_reference(photos: Sequence, encoder, face_index: Optional[int] = None):
    """The photos' mean unit face feature, or (None, the reason none was found)."""
    try:
        return reference_feature(photos, encoder, face_index), None
    except BadInput as error:
        return None, str(error)


def features_reference(features) -> Optional[np.ndarray]:
    """The unit mean of tuning's (photo, plain/mirrored, D) features, using the plain ones."""
    if features is None:
        return None
    return unit_mean(features[:, 0].detach().cpu().numpy() if hasattr(features, "detach")
                     else np.asarray(features)[:, 0])


__all__ = ["Judge", "JUDGES", "choose_judge", "tuned_with", "face_features", "readable_faces", "face_likeness",
           "largest_face_likeness", "best_match_likeness", "photo_reference", "features_reference"]
