"""How much a rendered face looks like the person in a photo: one scorer for every front end.

A face encoder reads the reference photos (the training photos, or any
photo of the person) into one unit feature; each rendered image's largest
face is read the same way, and the score is their cosine similarity. The
tab's previews, the HTTP API, ComfyUI's Likeness node and ``celebbasis eval``
(``evaluate.scoring``, which also picks the face model that judges) all call
these functions, so a number means the same everywhere.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np

from .errors import BadInput, NoFaceFound

log = logging.getLogger(__name__)


def reference_feature(photos: Sequence[Any], encoder, face_index: Optional[int] = None,
                      missing: str = "no face found in the reference photo") -> np.ndarray:
    """The unit mean feature of the chosen face in each photo; ``NoFaceFound`` when no photo has one.

    Photos without a usable face are skipped; the message of the last one
    is raised when none is left.
    """
    from .face.encoders import extract_face

    features, why = [], missing
    for photo in photos:
        try:
            features.append(extract_face(photo, encoder, face_index=face_index).feature)
        except BadInput as error:
            why = str(error)
    if not features:
        raise NoFaceFound(why)
    return unit_mean(np.stack(features))


def unit_mean(features) -> np.ndarray:
    """The mean of several unit features, scaled back to unit length."""
    mean = np.asarray(features, dtype=np.float32).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def face_features(image, encoder) -> list[np.ndarray]:
    """Unit identity features of every face in ``image`` (PIL or HxWx3 uint8), largest face first."""
    pixels = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    faces = sorted(encoder.detect(pixels), key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return [unit_mean(np.asarray(encoder.embed(pixels, face), dtype=np.float32).reshape(1, -1)) for face in faces]


def cosine(feature, reference) -> Optional[float]:
    """The score: cosine similarity of two unit features, 4 decimals (None when their sizes differ: two models)."""
    if np.shape(feature) != np.shape(reference):
        return None
    return round(float(np.dot(feature, reference)), 4)


def face_similarity(image, encoder, reference) -> Optional[float]:
    """Cosine similarity of the largest face in ``image`` (PIL or HxWx3 uint8) to ``reference``; None without a face."""
    try:
        features = face_features(image, encoder)
    except Exception:  # noqa: BLE001 - a render the encoder cannot read just has no score
        log.debug("likeness failed for one image", exc_info=True)
        return None
    return cosine(features[0], reference) if features else None
