"""Photos as the front ends hand them over, the face encoder the settings choose, and faces found in a photo."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import BadInput
from .settings import ServiceSettings

THUMBNAIL_SIZE = 128


@dataclass
class FaceInfo:
    """One detected face: index (largest first), box (x0, y0, x1, y1), score, a square thumbnail."""

    index: int
    box: tuple[float, float, float, float]
    score: float
    thumbnail: Any = None

    def as_dict(self) -> dict:
        return {"index": self.index, "box": [round(v, 1) for v in self.box], "score": round(self.score, 4)}


def normalize_photo(photo):
    """Photos as front ends hand them over: gradio file objects become their path."""
    if isinstance(photo, dict) and isinstance(photo.get("path") or photo.get("name"), str):
        return photo.get("path") or photo.get("name")  # gradio 4 FileData as a dict
    if isinstance(photo, (str, bytes, bytearray, memoryview, os.PathLike)):
        return photo
    name = getattr(photo, "name", None)
    if not hasattr(photo, "convert") and not hasattr(photo, "shape") and isinstance(name, str) \
            and os.path.isfile(name):
        return name  # gradio 3 tempfile wrapper (may already be closed)
    return photo


def load_encoder(settings: ServiceSettings, kind: str,
                 download_progress: Optional[Callable[[int, Optional[int]], None]] = None):
    """The face encoder ``kind`` (already resolved) with the settings' model folder and download permission;
    None for 'none'."""
    if kind == "none":
        return None
    from ..face.encoders import load_face_encoder

    return load_face_encoder(kind, models_dir=settings.models_dir or None, allow_download=settings.allow_download,
                             webui_root=settings.webui_root or None, download_progress=download_progress)


def detect(photo, encoder) -> list[FaceInfo]:
    """The faces in one photo, largest first, each with a square thumbnail."""
    if encoder is None:
        raise BadInput("face encoder 'none' finds no faces: the whole photo is used (mode 'direct')")
    from ..face.encoders import detect_faces
    from ..photos import load_photo

    image = load_photo(normalize_photo(photo))
    return [FaceInfo(index, tuple(float(v) for v in face.box), float(face.score), thumbnail(image, face.box))
            for index, face in enumerate(detect_faces(image, encoder))]


def thumbnail(image, box, size: int = THUMBNAIL_SIZE):
    """A square crop around a face box (with some margin), ``size`` pixels wide."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * 1.4
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = image.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    return crop.resize((size, size))
