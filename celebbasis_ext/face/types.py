"""Plain data passed between detectors, aligners and the tuning engine, and the encoder interface.

The interface lives here, beside the data it returns, so each encoder module
imports only this file and nothing imports back.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class DetectedFace:
    """One detector hit.

    ``landmarks`` is (5, 2) float32 in insightface's order: left eye, right
    eye, nose tip, left mouth corner, right mouth corner, where left/right
    mean image-left/image-right.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def short_side(self) -> float:
        return min(self.width, self.height)


@dataclass
class FaceSample:
    """What tuning needs from one photo of a person.

    ``feature`` is the L2-normalised identity vector (512-d for ArcFace,
    128-d for dlib); ``head_crop`` the 512x512 FFHQ-style head image that is
    the diffusion target; ``aligned`` the 112x112 ArcFace-template crop, kept
    for display. ``head_coverage`` is the fraction of the head crop taken
    from the photo rather than padded (low for tightly cropped photos).
    ``framing`` is the photo's own framing around the head (wider, for
    ``photo`` training views); ``head_face`` and ``framing_face`` say where
    the face box lies in each crop, as fractions (x0, y0, x1, y1).
    """

    feature: np.ndarray
    head_crop: Image.Image
    aligned: Image.Image
    box: tuple[float, float, float, float]
    score: float
    face_index: int
    encoder: str
    landmarks: np.ndarray | None = None
    head_coverage: float = 1.0
    head_face: tuple | None = None
    framing: Image.Image | None = None
    framing_face: tuple | None = None


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
