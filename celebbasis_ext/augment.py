"""Augmented training views of a face, as in the authors' code.

Each view: horizontal flip (p 0.5), colour jitter (brightness, contrast,
saturation 0.8-1.2, hue +-0.01), then the face scaled to 0.1-1.0 of the
canvas height (width x 0.9-1.1) and pasted at a random place on a black
canvas. The face encoder sees the unpasted face; the diffusion loss sees the
canvas. Pure torch (no torchvision: A1111 and Forge pin their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class AugmentedView:
    """One view: the canvas in [-1, 1] (3, R, R), which photo, whether flipped."""

    canvas: torch.Tensor
    photo_index: int
    flipped: bool


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB or HxWx3 uint8 -> (3, H, W) float in [0, 1]."""
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image[0], image[1], image[2]
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(0)


def _rotate_hue(image: torch.Tensor, turns: float) -> torch.Tensor:
    """Hue rotation by ``turns`` of a full circle, in YIQ space."""
    angle = 2 * math.pi * turns
    cos, sin = math.cos(angle), math.sin(angle)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rotate = torch.tensor([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], dtype=torch.float32)
    matrix = torch.linalg.inv(to_yiq) @ rotate @ to_yiq
    return torch.einsum("ij,jhw->ihw", matrix, image)


def colour_jitter(image: torch.Tensor, rng: np.random.Generator, strength: float = 0.2, hue: float = 0.01):
    """Brightness, contrast, saturation in [1-s, 1+s], hue in [-hue, hue]; image in [0, 1]."""
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    image = (image * brightness).clamp(0, 1)
    image = ((image - _grayscale(image).mean()) * contrast + _grayscale(image).mean()).clamp(0, 1)
    gray = _grayscale(image)
    image = ((image - gray) * saturation + gray).clamp(0, 1)
    return _rotate_hue(image, rng.uniform(-hue, hue)).clamp(0, 1)


def paste_on_canvas(face: torch.Tensor, size: int, rng: np.random.Generator,
                    scale=(0.1, 1.0), aspect=(0.9, 1.1)) -> torch.Tensor:
    """The face resized to a random fraction of ``size`` and placed at a random spot on black."""
    height = max(8, int(round(size * rng.uniform(*scale))))
    width = min(size, max(8, int(round(height * rng.uniform(*aspect)))))
    resized = F.interpolate(face.unsqueeze(0), size=(height, width), mode="bilinear", antialias=True,
                            align_corners=False)[0]
    canvas = torch.zeros(3, size, size)
    top = int(rng.integers(0, size - height + 1))
    left = int(rng.integers(0, size - width + 1))
    canvas[:, top : top + height, left : left + width] = resized.clamp(0, 1)
    return canvas


def resize_square(face: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(face.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def augmented_views(faces: list[torch.Tensor], count: int, size: int, seed: int,
                    augment: bool = True) -> list[AugmentedView]:
    """``count`` views cycling over the photos (so several photos are all used), seeded.

    ``augment=False`` gives each photo once, only resized (for experiments
    where the target must be exactly the image).
    """
    rng = np.random.default_rng(seed)
    if not augment:
        return [AugmentedView(resize_square(face, size) * 2 - 1, index, False) for index, face in enumerate(faces)]
    views = []
    for index in range(count):
        photo_index = index % len(faces)
        face = faces[photo_index]
        flipped = bool(rng.random() < 0.5)
        if flipped:
            face = face.flip(-1)
        face = colour_jitter(face, rng)
        canvas = paste_on_canvas(face, size, rng)
        views.append(AugmentedView(canvas * 2 - 1, photo_index, flipped))
    return views
