"""Augmented training views of a face: what the diffusion loss learns to draw.

Three kinds of view (``views``):

- ``paper``, as in the authors' code: horizontal flip (p 0.5), colour jitter
  (brightness, contrast, saturation 0.8-1.2, hue +-0.01), then the head crop
  scaled to 0.1-1.0 of the canvas height (width x 0.9-1.1) and pasted at a
  random place on a black canvas.
- ``photo``: the same flip and jitter, then a random square-ish crop of the
  photo's own framing around the head (``FacePhoto.framing``: the aligned
  head crop enlarged for hair and shoulders, never padded with black) that
  always holds the whole face, resized to the canvas. ``PHOTO_CROP_SCALE``
  and ``PHOTO_CROP_ASPECT`` say how much and why.
- ``mixed``: each view is a ``paper`` view with probability
  ``MIXED_PAPER_SHARE``, else a ``photo`` view.

Every view knows where the face is on its canvas, so the loss can be weighted
towards it (``face_weights``: a feathered ellipse at latent resolution, a
small weight outside). The face encoder sees the unpasted face; the diffusion
loss sees the canvas. Pure torch (no torchvision: A1111 and Forge pin their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

VIEW_MODES = ("paper", "photo", "mixed")
LOSS_MASKS = ("none", "face")

PHOTO_CROP_SCALE = (0.3, 1.0)
"""Share of the framing's area a photo view keeps. With a full framing (about twice
the head crop, ``face.align.FRAMING_ZOOM``) the face spans from ~25% of the view
width (the whole framing: a head-and-shoulders portrait) to ~45% (a 0.3 crop:
about the close-up the head crop shows), the range of framings a model draws for
"a photo of X". The crop never leaves the framing, so no border is invented."""

PHOTO_MAX_FACE_SHARE = 0.6
"""A photo view never crops tighter than this share of its side for the face box (a
head crop's close-up): a tightly framed photo gives views between its own framing
and that, not crops that cut the head down to the face."""

PHOTO_CROP_ASPECT = (0.9, 1.1)
"""Width/height of the crop before it is resized to the square canvas: the
authors' own width jitter. torchvision's 3/4-4/3 would stretch faces by a
third, which changes the very proportions the identity is made of."""

MIXED_PAPER_SHARE = 0.5
"""In ``mixed`` mode, the share of views pasted on black as the authors do."""

FACE_BOX_IN_HEAD = (0.27, 0.3, 0.73, 0.8)
"""Where the face (brows to chin) lies in a head crop of ``face.align.head_crop``
when no landmarks say better: eyes at 40% of the height, the side ~4.8 eye distances."""

MASK_OUTSIDE = 0.1
"""Loss weight of latent cells away from the face: small, so hair, neck and the
frame still count (the render must stay a plausible picture), but a background
can no longer outweigh the face it surrounds."""

MASK_GROW = 1.3
"""The mask's ellipse is the face box's inscribed ellipse grown by this factor:
the box runs from brows to chin, the ellipse takes in forehead and jaw line."""

MASK_FEATHER = 0.35
"""Width of the soft edge, in units of the ellipse's radius."""

Box = tuple  # (x0, y0, x1, y1) as fractions of the image


@dataclass
class FacePhoto:
    """One photo as views are cut from it, images as (3, H, W) tensors in [0, 1] or PIL images.

    ``head`` is the FFHQ-style head crop (``paper`` views paste it on black);
    ``framing`` the photo's own framing around it (``photo`` views crop it; the
    head crop when None); ``*_face`` where the face lies in each, as fractions.
    """

    head: Any
    head_face: Box = FACE_BOX_IN_HEAD
    framing: Any = None
    framing_face: Optional[Box] = None

    def as_tensors(self) -> "FacePhoto":
        head = _as_tensor(self.head)
        framing = head if self.framing is None else _as_tensor(self.framing)
        framing_face = self.framing_face if self.framing is not None and self.framing_face is not None \
            else self.head_face
        return FacePhoto(head, tuple(self.head_face), framing, tuple(framing_face))


@dataclass
class AugmentedView:
    """One view: the canvas in [-1, 1] (3, R, R), which photo, whether flipped, the face box on the canvas."""

    canvas: torch.Tensor
    photo_index: int
    flipped: bool
    face_box: Box = FACE_BOX_IN_HEAD


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB or HxWx3 uint8 -> (3, H, W) float in [0, 1]."""
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _as_tensor(image) -> torch.Tensor:
    return image if isinstance(image, torch.Tensor) else image_to_tensor(image)


def as_face_photo(item) -> FacePhoto:
    """A ``FacePhoto``, or a plain head crop (PIL or tensor) with the face where head crops hold it."""
    return item if isinstance(item, FacePhoto) else FacePhoto(item)


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


def _placement(size: int, rng: np.random.Generator, scale, aspect) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a face pasted at a random fraction of ``size``."""
    height = max(8, int(round(size * rng.uniform(*scale))))
    width = min(size, max(8, int(round(height * rng.uniform(*aspect)))))
    top = int(rng.integers(0, size - height + 1))
    left = int(rng.integers(0, size - width + 1))
    return top, left, height, width


def paste_on_canvas(face: torch.Tensor, size: int, rng: np.random.Generator,
                    scale=(0.1, 1.0), aspect=(0.9, 1.1)) -> torch.Tensor:
    """The face resized to a random fraction of ``size`` and placed at a random spot on black."""
    return _paste(face, size, _placement(size, rng, scale, aspect))


def _paste(face: torch.Tensor, size: int, placement) -> torch.Tensor:
    top, left, height, width = placement
    resized = F.interpolate(face.unsqueeze(0), size=(height, width), mode="bilinear", antialias=True,
                            align_corners=False)[0]
    canvas = torch.zeros(3, size, size)
    canvas[:, top : top + height, left : left + width] = resized.clamp(0, 1)
    return canvas


def crop_around_face(image: torch.Tensor, face: Box, size: int, rng: np.random.Generator,
                     scale=PHOTO_CROP_SCALE, aspect=PHOTO_CROP_ASPECT) -> tuple[torch.Tensor, Box]:
    """A random crop of ``image`` holding the whole face box, resized to ``size``; and the face box in it.

    The crop keeps ``scale`` of the image's area at width/height ``aspect``,
    never so little that the face box takes more than ``PHOTO_MAX_FACE_SHARE``
    of its side; when the face is too big for the drawn crop, the crop grows to hold it.
    """
    _, height, width = image.shape
    # the smallest crop that still keeps the face at most PHOTO_MAX_FACE_SHARE of the view's side
    face_side = max((face[2] - face[0]) * width, (face[3] - face[1]) * height) / PHOTO_MAX_FACE_SHARE
    low = min(1.0, max(scale[0], face_side ** 2 / (height * width)))
    area = rng.uniform(low, max(low, scale[1])) * height * width
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    crop_w = min(width, math.sqrt(area * ratio))
    crop_h = min(height, math.sqrt(area / ratio))
    fx0, fy0, fx1, fy1 = face[0] * width, face[1] * height, face[2] * width, face[3] * height
    crop_w = max(crop_w, min(width, fx1 - fx0))
    crop_h = max(crop_h, min(height, fy1 - fy0))
    # the crop's left edge may lie anywhere that keeps the face inside it (and the crop inside the image)
    left = rng.uniform(max(0.0, fx1 - crop_w), max(max(0.0, fx1 - crop_w), min(fx0, width - crop_w)))
    top = rng.uniform(max(0.0, fy1 - crop_h), max(max(0.0, fy1 - crop_h), min(fy0, height - crop_h)))
    left, top = min(left, width - crop_w), min(top, height - crop_h)
    x0, y0 = int(math.floor(left)), int(math.floor(top))
    x1, y1 = min(width, int(math.ceil(left + crop_w))), min(height, int(math.ceil(top + crop_h)))
    crop = image[:, y0:y1, x0:x1]
    view = F.interpolate(crop.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)
    w, h = x1 - x0, y1 - y0
    box = ((fx0 - x0) / w, (fy0 - y0) / h, (fx1 - x0) / w, (fy1 - y0) / h)
    return view, tuple(min(1.0, max(0.0, v)) for v in box)


def resize_square(face: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(face.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def _flip_box(box: Box) -> Box:
    return (1.0 - box[2], box[1], 1.0 - box[0], box[3])


def augmented_views(photos: Sequence, count: int, size: int, seed: int, augment: bool = True,
                    views: str = "paper") -> list[AugmentedView]:
    """``count`` views cycling over the photos (so several photos are all used), seeded.

    ``photos`` are ``FacePhoto``s or plain head crops. ``augment=False`` gives
    each head crop once, only resized, whatever ``views`` says (for
    experiments where the target must be exactly the image). ``paper`` views
    are the same, seed for seed, as before view modes existed.
    """
    if views not in VIEW_MODES:
        raise ValueError(f"views must be one of {', '.join(VIEW_MODES)}, not {views!r}")
    photos = [as_face_photo(photo).as_tensors() for photo in photos]
    rng = np.random.default_rng(seed)
    if not augment:
        return [AugmentedView(resize_square(photo.head, size) * 2 - 1, index, False, photo.head_face)
                for index, photo in enumerate(photos)]
    result = []
    for index in range(count):
        photo_index = index % len(photos)
        photo = photos[photo_index]
        paper = views == "paper" or (views == "mixed" and rng.random() < MIXED_PAPER_SHARE)
        image, face = (photo.head, photo.head_face) if paper else (photo.framing, photo.framing_face)
        flipped = bool(rng.random() < 0.5)
        if flipped:
            image, face = image.flip(-1), _flip_box(face)
        image = colour_jitter(image, rng)
        if paper:
            top, left, height, width = placement = _placement(size, rng, (0.1, 1.0), (0.9, 1.1))
            canvas = _paste(image, size, placement)
            box = ((left + face[0] * width) / size, (top + face[1] * height) / size,
                   (left + face[2] * width) / size, (top + face[3] * height) / size)
        else:
            canvas, box = crop_around_face(image, face, size, rng)
        result.append(AugmentedView(canvas * 2 - 1, photo_index, flipped, box))
    return result


def face_weights(box: Box, height: int, width: int, outside: float = MASK_OUTSIDE) -> torch.Tensor:
    """(1, height, width) loss weights at latent resolution: 1 on the face, ``outside`` away from it.

    A feathered ellipse around the face box (``MASK_GROW``, ``MASK_FEATHER``),
    sampled at the latent cells' centres.
    """
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = max((x1 - x0) / 2 * MASK_GROW, 0.5 / width), max((y1 - y0) / 2 * MASK_GROW, 0.5 / height)
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    radius = (((xs[None, :] - cx) / rx) ** 2 + ((ys[:, None] - cy) / ry) ** 2).sqrt()
    edge = ((1 + MASK_FEATHER / 2 - radius) / MASK_FEATHER).clamp(0, 1)
    edge = edge * edge * (3 - 2 * edge)  # smoothstep: no hard step a latent cell could straddle
    return (outside + (1 - outside) * edge).unsqueeze(0)
