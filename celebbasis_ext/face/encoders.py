"""Choosing a face in a photo, and loading a face encoder by name.

Front ends call ``load_face_encoder`` once and then ``detect_faces`` (to show
the choices) and ``extract_face`` (to get what tuning needs). Every encoder
implements ``types.FaceEncoder`` and is listed in ``registry.ENCODERS``, so the
engine never cares which one runs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import BadInput, ModelFilesMissing, NoFaceFound, TuningFailed
from ..photos import clean_label, describe_source, load_photo
from . import model_files
from .align import align_arcface, face_box_in_crop, framing_crop, head_coverage, head_crop
from .registry import ENCODERS, DownloadProgress
from .types import DetectedFace, FaceEncoder, FaceSample

log = logging.getLogger(__name__)

CLEARLY_LARGEST = 1.5
"""With several faces and no index, the largest is taken only if its box area
is at least this many times the next one; otherwise the user must choose."""

MIN_FACE_PX = 64
HEAD_SIZE = 512
ALIGNED_SIZE = 112
ENCODER_KINDS = ("auto", *ENCODERS)


def detect_faces(photo: Any, encoder: FaceEncoder, *, label: str | None = None) -> list[DetectedFace]:
    """Decode a photo and list its faces, largest first (index = position here)."""
    image = load_photo(photo, label=label)
    return _sorted(encoder.detect(np.asarray(image)))


def extract_face(
    photo: Any,
    encoder: FaceEncoder,
    face_index: int | None = None,
    min_face_px: int = MIN_FACE_PX,
    *,
    label: str | None = None,
    head_size: int = HEAD_SIZE,
) -> FaceSample:
    """Decode a photo, choose one face and compute everything tuning needs from it.

    With several faces and no ``face_index`` the largest is used only when it
    is clearly the largest; otherwise ``BadInput`` asks the user to choose, so
    nobody gets trained on the wrong person by accident.
    """
    label = clean_label(label) if label else describe_source(photo)
    image = load_photo(photo, label=label)
    pixels = np.asarray(image)
    faces = _sorted(encoder.detect(pixels))
    index = choose_face(faces, face_index, label)
    face = faces[index]
    if face.short_side < min_face_px:
        raise BadInput(
            f"{label}: face too small ({int(round(face.short_side))} px); use a photo where the face is at least {min_face_px} px"
        )
    feature = _unit(encoder.embed(pixels, face), encoder)
    aligned = Image.fromarray(align_arcface(pixels, face.landmarks, ALIGNED_SIZE))
    head = head_crop(pixels, face, head_size)
    framing, framing_face = framing_crop(pixels, face, head_size)
    return FaceSample(
        feature=feature,
        head_crop=head,
        aligned=aligned,
        box=tuple(float(v) for v in face.box),
        score=float(face.score),
        face_index=index,
        encoder=encoder.name,
        landmarks=np.asarray(face.landmarks, dtype=np.float32).copy(),
        head_coverage=head_coverage(pixels.shape, face),
        head_face=face_box_in_crop(face),
        framing=framing,
        framing_face=framing_face,
    )


def choose_face(faces: Sequence[DetectedFace], face_index: int | None, label: str) -> int:
    """Index of the face to use, or a one-line ``BadInput``/``NoFaceFound`` saying why not."""
    count = len(faces)
    if count == 0:
        raise NoFaceFound(f"no face found in {label}")
    if face_index is not None:
        if isinstance(face_index, bool) or not isinstance(face_index, (int, np.integer)):
            raise BadInput(f"face index must be a whole number, got {face_index!r}")
        if not 0 <= int(face_index) < count:
            found = "1 face" if count == 1 else f"{count} faces (0-{count - 1}, largest first)"
            raise BadInput(f"face index {int(face_index)} is out of range: {label} has {found}")
        return int(face_index)
    if count == 1 or faces[0].area >= CLEARLY_LARGEST * faces[1].area:
        return 0
    raise BadInput(
        f"{label} has {count} faces of similar size; choose one with a face index 0-{count - 1} (largest first)"
    )


def _sorted(faces: Sequence[DetectedFace]) -> list[DetectedFace]:
    return sorted(faces, key=lambda face: -face.area)


def _unit(vector: Any, encoder: FaceEncoder) -> np.ndarray:
    """Check an encoder's output and return it as unit-length float32."""
    feature = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(feature))
    if not np.all(np.isfinite(feature)) or norm <= 1e-12:
        raise TuningFailed(f"the {encoder.name} face encoder returned an invalid feature")
    if encoder.feature_dim and feature.shape[0] != encoder.feature_dim:
        raise TuningFailed(f"the {encoder.name} face encoder returned {feature.shape[0]} values, expected {encoder.feature_dim}")
    return feature / norm


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def load_face_encoder(
    kind: str = "auto",
    models_dir: os.PathLike | None = None,
    allow_download: bool = False,
    providers: Sequence[str] | None = None,
    *,
    webui_root: os.PathLike | None = None,
    reuse: bool = True,
    download_progress: DownloadProgress | bool = True,
) -> FaceEncoder:
    """Return a ready face encoder: "insightface" (buffalo_l), "dlib", or "auto".

    "auto" tries the registry's encoders in order: one whose files are on
    disk (or, for insightface, downloadable when allowed) and that loads; with
    none it raises one ``ModelFilesMissing`` message listing every way out.
    Loaded encoders are reused across calls with the same arguments
    (``reuse``), as model loading takes seconds; pass ``reuse=False`` to
    search again (e.g. after model files were added). ``download_progress``
    is a tqdm bar (True), nothing (False), or a callable(received, total).
    """
    kind = str(kind or "auto").strip().lower()
    if kind not in ENCODER_KINDS:
        raise BadInput(f"unknown face encoder {kind!r}; use one of: {', '.join(ENCODER_KINDS)}")
    key = (
        kind,
        str(models_dir or ""),
        str(webui_root or os.environ.get(model_files.ENV_WEBUI_ROOT, "")),
        bool(allow_download),
        tuple(providers or ()),
    )
    if reuse:
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is not None:
            return cached

    if kind == "auto":
        encoder = _auto(models_dir, webui_root, allow_download, providers, download_progress)
    else:
        encoder = ENCODERS[kind].load(models_dir, webui_root, allow_download=allow_download, providers=providers,
                                      progress=download_progress)
    if reuse:
        with _CACHE_LOCK:
            _CACHE[key] = encoder
    return encoder


def _auto(models_dir, webui_root, allow_download, providers, progress) -> FaceEncoder:
    """The first encoder that is on disk and loads; insightface may be downloaded first when allowed."""
    problems = []
    entries = list(ENCODERS.values())
    for position, entry in enumerate(entries):
        if not (entry.available(models_dir, webui_root) or (allow_download and entry.downloads)):
            continue
        if position == len(entries) - 1:  # the last resort's own message is the clearest
            return entry.load(models_dir, webui_root, allow_download=allow_download, providers=providers, progress=progress)
        try:
            return entry.load(models_dir, webui_root, allow_download=allow_download, providers=providers, progress=progress)
        except ModelFilesMissing as exc:  # broken or unloadable files: say so, try the next one
            log.warning("%s; trying %s instead", exc, entries[position + 1].name)
            problems.append(str(exc))
    reason = f" ({problems[0]})" if problems else ""
    ways = ", or ".join(entry.how_to_get(models_dir, webui_root) for entry in entries)
    raise ModelFilesMissing(f"no face encoder available{reason}: {ways}, or use --face-encoder none with --mode direct")
