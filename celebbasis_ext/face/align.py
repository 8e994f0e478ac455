"""Geometry from 5 face landmarks: the ArcFace crop and the FFHQ-style head crop.

Two crops serve two purposes: the 112x112 ArcFace-template crop is what face
recognisers were trained on (and is shown to the user); the 512x512 head crop
is the picture the diffusion model learns to draw. Works with OpenCV when it is
installed and falls back to Pillow, with the same pixel conventions (pixel
centres at integer coordinates, as landmarks are reported).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

try:  # OpenCV is optional: faster and a little sharper, same geometry.
    import cv2
except ImportError:  # pragma: no cover - exercised by forcing the Pillow path
    cv2 = None

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye (image-left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float32,
)
"""Reference landmark positions of the standard 112x112 ArcFace alignment."""

HEAD_ZOOM = 1.2
"""Head crop side relative to FFHQ's (1.0): a little wider, for hair and shoulders."""

HEAD_EYE_HEIGHT = 0.4
"""Where the eyes sit in the head crop, as a fraction of its height."""

FRAMING_ZOOM = 2.4
"""The photo's own framing (``photo`` training views) at most this wide: twice the head crop,
head, hair and shoulders, the way portraits are framed."""


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping src to dst.

    Umeyama's closed form; returns the 2x3 matrix ``M`` with ``dst ~ M @ [x, y, 1]``.
    Reflections are excluded, so a mirrored point set is not "aligned" by flipping.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError("need at least two matching 2-D points")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float((s * signs).sum() / src_var)
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def align_arcface(image_rgb: np.ndarray, landmarks: np.ndarray, size: int = 112, *, antialias: bool = True) -> np.ndarray:
    """Warp a face onto the ArcFace 5-point template; returns (size, size, 3) uint8.

    ``antialias`` box-filters very large faces before warping (a 1000 px face
    sampled straight down to 112 px aliases); for faces under about 3x the
    template it changes nothing, so the result matches insightface's
    ``norm_crop``.
    """
    template = ARCFACE_TEMPLATE * (float(size) / 112.0)
    forward = estimate_similarity(np.asarray(landmarks, dtype=np.float64), template)
    return warp_to_square(_as_array(image_rgb), invert_affine(forward), size, border="constant", antialias=antialias)


def head_geometry(landmarks: np.ndarray, zoom: float = HEAD_ZOOM, eye_height: float = HEAD_EYE_HEIGHT):
    """Centre and half-axes (x right, y down) of the square head crop, in image pixels.

    FFHQ's rule: the crop is oriented by a blend of the eye line and the
    eye-to-mouth line (robust for turned heads), so eyes come out level on
    frontal faces, and its half-side is max(2 x eye distance, 1.8 x
    eye-to-mouth distance). ``zoom`` widens it; the centre is placed so the eye
    midpoint lands at ``eye_height`` of the crop.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_left, eye_right = points[0], points[1]
    eye_mid = (eye_left + eye_right) / 2.0
    mouth_mid = (points[3] + points[4]) / 2.0
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_mid - eye_mid
    # rotate eye_to_mouth by -90 degrees so it points along +x for an upright face
    axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    length = float(np.hypot(*axis))
    if length <= 1e-6:
        raise ValueError("landmarks are degenerate")
    half = max(float(np.hypot(*eye_to_eye)) * 2.0, float(np.hypot(*eye_to_mouth)) * 1.8) * float(zoom)
    x_axis = axis / length * half
    y_axis = np.array([-x_axis[1], x_axis[0]])
    centre = eye_mid + y_axis / half * (0.5 - float(eye_height)) * 2.0 * half
    return centre, x_axis, y_axis


def head_crop(
    image: Image.Image | np.ndarray,
    face: Any,
    size: int = 512,
    *,
    zoom: float = HEAD_ZOOM,
    eye_height: float = HEAD_EYE_HEIGHT,
    border: str = "blur",
) -> Image.Image:
    """The FFHQ-style square head crop (whole head, some shoulders), as RGB.

    ``face`` is a ``DetectedFace`` or a (5, 2) landmark array. Parts of the
    square outside the photo are filled by repeating the edge pixels; with
    ``border="blur"`` (default, as FFHQ does) that fill is blurred and faded
    towards the photo's mean colour, so the diffusion model is not taught
    streaks; ``"edge"`` keeps the raw repetition, ``"black"`` fills black.
    """
    if border not in ("blur", "edge", "black"):
        raise ValueError("border must be 'blur', 'edge' or 'black'")
    pixels = _as_array(image)
    inverse = _head_inverse(getattr(face, "landmarks", face), size, zoom, eye_height)
    out = warp_to_square(pixels, inverse, size, border="constant" if border == "black" else "edge")
    if border == "blur":
        inside = _inside_mask(pixels.shape, inverse, size)
        if inside.min() < 0.999:
            out = _soften_padding(out, inside)
    return Image.fromarray(out)


def head_coverage(image_shape: tuple, face: Any, *, zoom: float = HEAD_ZOOM, eye_height: float = HEAD_EYE_HEIGHT) -> float:
    """Fraction of the head crop that shows the photo rather than padding (1.0 = all photo).

    Tightly cropped photos (e.g. a 112 px aligned face) give low values: the
    face is usable for identity, but the head crop is mostly invented border.
    """
    inverse = _head_inverse(getattr(face, "landmarks", face), 64, zoom, eye_height)
    return float(_inside_mask(tuple(image_shape), inverse, 64).mean())


def face_box_in_crop(face: Any, zoom: float = HEAD_ZOOM, eye_height: float = HEAD_EYE_HEIGHT) -> tuple:
    """Where the detector's face box lies in the square crop of ``head_crop(..., zoom=zoom)``.

    As fractions (x0, y0, x1, y1) of the crop's side: the bounding box of the
    face box's corners, clipped to the crop. ``face`` is a ``DetectedFace``.
    """
    size = 1000.0
    forward = invert_affine(_head_inverse(face.landmarks, int(size), zoom, eye_height))
    x0, y0, x1, y1 = face.box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=np.float64) @ forward.T
    corners = (corners + 0.5) / size  # pixel index i covers [i, i + 1) of the crop
    low, high = np.clip(corners.min(axis=0), 0, 1), np.clip(corners.max(axis=0), 0, 1)
    return (float(low[0]), float(low[1]), float(high[0]), float(high[1]))


def framing_crop(image: Image.Image | np.ndarray, face: Any, size: int = 512,
                 zoom: float = FRAMING_ZOOM) -> tuple[Image.Image, tuple]:
    """The photo's own framing around the head, as a square RGB image, and the face box in it.

    An upright square (the photo's own orientation: nothing is rotated, so
    nothing is padded) centred where the head crop would be, ``zoom`` wide in
    the head crop's units, shrunk and shifted as far as needed to stay inside
    the photo and to hold the whole face box. A tightly cropped photo gives a
    tight framing: its views show only what the photo shows.
    """
    pixels = _as_array(image)
    height, width = pixels.shape[:2]
    centre, x_axis, _ = head_geometry(getattr(face, "landmarks", face), zoom)
    x0, y0, x1, y1 = getattr(face, "box", (centre[0], centre[1], centre[0], centre[1]))
    side = min(2.0 * float(np.hypot(*x_axis)), width, height)
    side = max(side, min(max(x1 - x0, y1 - y0), width, height))
    left = float(np.clip(centre[0] - side / 2, max(0.0, x1 - side), max(max(0.0, x1 - side), min(x0, width - side))))
    top = float(np.clip(centre[1] - side / 2, max(0.0, y1 - side), max(max(0.0, y1 - side), min(y0, height - side))))
    left, top = min(max(left, 0.0), width - side), min(max(top, 0.0), height - side)
    crop = Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS,
                                          box=(left, top, left + side, top + side))
    box = ((x0 - left) / side, (y0 - top) / side, (x1 - left) / side, (y1 - top) / side)
    return crop, tuple(float(np.clip(v, 0.0, 1.0)) for v in box)


def _head_inverse(landmarks: np.ndarray, size: int, zoom: float, eye_height: float) -> np.ndarray:
    """Map from head-crop pixel indices to photo pixel coordinates (2x3)."""
    centre, x_axis, y_axis = head_geometry(landmarks, zoom, eye_height)
    origin = centre - x_axis - y_axis
    # output pixel index i has its centre at i + 0.5 in units of (2 half) / size
    linear = np.stack([x_axis, y_axis], axis=1) * (2.0 / size)
    return np.hstack([linear, (origin + linear @ np.array([0.5, 0.5]))[:, None]])


def _inside_mask(image_shape: tuple, inverse: np.ndarray, size: int) -> np.ndarray:
    """Per output pixel, 1.0 where it samples inside the photo, else 0.0."""
    ys, xs = np.mgrid[:size, :size].astype(np.float64)
    px = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    py = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    height, width = image_shape[:2]
    inside = (px >= -0.5) & (px <= width - 0.5) & (py >= -0.5) & (py <= height - 0.5)
    return inside.astype(np.float32)


def _soften_padding(out: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Blur the padded area, more with distance from the photo, and fade it to the mean colour."""
    size = out.shape[0]
    outside = 1.0 - inside
    near = np.clip(_blur(outside, 0.01 * size) * 2.0, 0.0, 1.0)[..., None]
    far = np.clip(_blur(outside, 0.06 * size) * 1.5 - 0.25, 0.0, 1.0)[..., None]
    pixels = out.astype(np.float32)
    mean = pixels[inside > 0.5].mean(axis=0) if inside.max() > 0.5 else pixels.reshape(-1, 3).mean(axis=0)
    soft = _blur(pixels, 0.02 * size)
    softer = _blur(pixels, 0.06 * size) * 0.5 + mean * 0.5
    result = pixels * (1.0 - near) + soft * near
    result = result * (1.0 - far) + softer * far
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


def _blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float image or mask (OpenCV, else a separable numpy filter)."""
    array = np.asarray(array, dtype=np.float32)
    if cv2 is not None:
        return cv2.GaussianBlur(array, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REPLICATE)
    radius = max(1, int(round(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / float(sigma)) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    result = array
    for axis in (0, 1):
        pad = [(0, 0)] * result.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(result, pad, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, len(taps), axis=axis)
        result = windows @ taps
    return result.astype(np.float32)


def warp_to_square(
    image: np.ndarray,
    inverse: np.ndarray,
    size: int,
    *,
    border: str = "constant",
    antialias: bool = True,
) -> np.ndarray:
    """Sample a (size, size) image; ``inverse`` maps output pixels to input pixels.

    Only the part of the photo under the output square is touched, and when
    it is much larger than the output it is first shrunk by an integer box
    filter, so big photos neither alias nor cost full-frame work.
    """
    inverse = np.asarray(inverse, dtype=np.float64)
    image, inverse = _crop_to_footprint(image, inverse, size)
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))
    if antialias and scale > 3.0:
        factor = int(scale // 1.5)
        image, inverse = _shrink(image, inverse, factor)
    if cv2 is not None:
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        mode = cv2.BORDER_REPLICATE if border == "edge" else cv2.BORDER_CONSTANT
        return cv2.warpAffine(image, inverse, (size, size), flags=flags, borderMode=mode, borderValue=(0, 0, 0))
    return _pil_warp(image, inverse, size, border)


def _crop_to_footprint(image: np.ndarray, inverse: np.ndarray, size: int):
    """Cut the input down to the output square's footprint (plus a margin)."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    points = corners @ inverse.T
    height, width = image.shape[:2]
    margin = 2.0 + float(np.sqrt(abs(np.linalg.det(inverse[:, :2])))) * 2.0
    x0 = int(max(0, np.floor(points[:, 0].min() - margin)))
    y0 = int(max(0, np.floor(points[:, 1].min() - margin)))
    x1 = int(min(width, np.ceil(points[:, 0].max() + margin)))
    y1 = int(min(height, np.ceil(points[:, 1].max() + margin)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        # the square lies (almost) entirely outside the photo: keep a sliver for edge fill
        x0, y0 = min(max(x0, 0), width - 2), min(max(y0, 0), height - 2)
        x1, y1 = x0 + 2, y0 + 2
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    return np.ascontiguousarray(image[y0:y1, x0:x1]), shifted


def _shrink(image: np.ndarray, inverse: np.ndarray, factor: int):
    height, width = image.shape[:2]
    small_w, small_h = max(1, width // factor), max(1, height // factor)
    if cv2 is not None:
        small = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    else:
        small = np.asarray(Image.fromarray(image).resize((small_w, small_h), Image.Resampling.BOX))
    sx, sy = width / small_w, height / small_h
    # input pixel p (centre p + 0.5) lies at small pixel (p + 0.5) / s - 0.5
    scaled = inverse.copy()
    scaled[0] /= sx
    scaled[1] /= sy
    scaled[0, 2] += 0.5 / sx - 0.5
    scaled[1, 2] += 0.5 / sy - 0.5
    return small, scaled


def _pil_warp(image: np.ndarray, inverse: np.ndarray, size: int, border: str) -> np.ndarray:
    """Pillow fallback; Pillow samples at pixel centres (x + 0.5), so shift by half a pixel."""
    if border == "edge":
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inverse.T
        height, width = image.shape[:2]
        overshoot = max(0.0, -corners.min(), corners[:, 0].max() - width, corners[:, 1].max() - height)
        pad = int(np.ceil(overshoot)) + 2
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        inverse = inverse.copy()
        inverse[:, 2] += pad
    a, b, c = inverse[0]
    d, e, f = inverse[1]
    coeffs = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    out = Image.fromarray(image).transform(
        (size, size), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )
    return np.asarray(out)


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError("expected an HxWx3 uint8 RGB image")
    return np.ascontiguousarray(array)
