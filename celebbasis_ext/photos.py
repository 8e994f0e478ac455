"""Decode a user's photo into a plain 8-bit RGB image, or refuse it clearly.

Photos come from uploads, paths and other programs, so this is the one place
that guards against bad files: empty, truncated or fake images, decompression
bombs, animations, odd colour modes and tiny pictures. Everything else in the
engine may assume an upright ``RGB`` ``PIL.Image`` of sane size.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadInput

MAX_PIXELS = 64_000_000
"""Our own decompression-bomb limit, checked from the header before decoding.

It is lower than Pillow's default and independent of ``Image.MAX_IMAGE_PIXELS``,
which WebUI hosts sometimes raise or disable globally.
"""

MIN_SIDE = 64
"""Smaller photos cannot hold a face big enough to learn from."""

MAX_BYTES = 256 * 1024 * 1024
"""Cap on bytes read from a stream or file, so a huge upload cannot exhaust memory."""

BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited on white.

Cut-out portraits (transparent PNGs) are almost always meant to sit on white,
like ID and studio photos; white keeps the head crop (the diffusion target)
looking like such a photo rather than a dark or tinted one.
"""

# Formats we let Pillow try. Restricting them keeps rarely used decoders (and
# EPS, which runs Ghostscript) away from untrusted uploads. MPO is what many
# phone cameras write for plain JPEG photos; AVIF/HEIF only work where a plugin
# registered them.
_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF", "HEIF")
_SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF"
_MULTI_FRAME_OK = {"MPO"}  # frame 0 is the photo, the rest are previews/depth


def describe_source(source: Any) -> str:
    """A short, one-line name for messages: the file's base name, or 'photo'."""
    name = None
    if isinstance(source, (str, os.PathLike)):
        name = os.path.basename(os.fspath(source))
    else:
        raw = getattr(source, "name", None)
        if isinstance(raw, str) and not isinstance(source, Image.Image):
            name = os.path.basename(raw)
    return clean_label(name) if name else "photo"


def clean_label(label: Any) -> str:
    """Make any label safe for a one-line message (no control characters, bounded length)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(label))
    return text[:80] or "photo"


def load_photo(
    source: Any,
    *,
    label: str | None = None,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
    background: tuple[int, int, int] = BACKGROUND,
) -> Image.Image:
    """Return ``source`` as an upright 8-bit RGB image with no metadata.

    ``source`` may be a path, bytes, a binary file-like object, a PIL image or
    a uint8 numpy array (HxW, HxWx3 RGB or HxWx4 RGBA). EXIF orientation is
    applied and EXIF itself (GPS, serial numbers) is dropped. Raises
    ``BadInput`` with a one-line message for anything unusable.
    """
    label = clean_label(label) if label else describe_source(source)
    if isinstance(source, Image.Image):
        image = _check_pil(source, label, max_pixels)
    elif isinstance(source, np.ndarray):
        image = _from_array(source, label, max_pixels)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise BadInput(f"{label}: the file is empty")
        if len(data) > MAX_BYTES:
            raise BadInput(f"{label}: the file is too large ({len(data) >> 20} MB)")
        image = _decode(io.BytesIO(data), label, max_pixels)
    elif isinstance(source, (str, os.PathLike)):
        image = _decode_path(source, label, max_pixels)
    elif hasattr(source, "read"):
        image = _decode(io.BytesIO(_read_stream(source, label)), label, max_pixels)
    else:
        raise BadInput(f"{label}: expected a path, bytes, a file, a PIL image or an array, got {type(source).__name__}")

    image = _to_rgb(image, label, background)
    width, height = image.size
    if min(width, height) < min_side:
        raise BadInput(f"{label}: the image is too small ({width}x{height} px); use a photo at least {min_side} px on each side")
    image.info = {}
    return image


def _read_stream(stream: Any, label: str) -> bytes:
    """Read a caller's stream with a cap; the caller keeps ownership of it."""
    try:
        data = stream.read(MAX_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise BadInput(f"{label}: cannot read the file ({exc.__class__.__name__})") from None
    if isinstance(data, str):
        raise BadInput(f"{label}: the file was opened in text mode; open it in binary mode")
    if not data:
        raise BadInput(f"{label}: the file is empty")
    if len(data) > MAX_BYTES:
        raise BadInput(f"{label}: the file is too large (over {MAX_BYTES >> 20} MB)")
    return bytes(data)


def _decode_path(path: Any, label: str, max_pixels: int) -> Image.Image:
    if os.path.isdir(path):  # Windows reports folders as PermissionError on open()
        raise BadInput(f"{label}: is a folder, not an image file")
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if size == 0:
                raise BadInput(f"{label}: the file is empty")
            if size > MAX_BYTES:
                raise BadInput(f"{label}: the file is too large ({size >> 20} MB)")
            # Pillow gets the open file, not the path, so the returned image
            # carries no filename.
            return _decode(fp, label, max_pixels)
    except FileNotFoundError:
        raise BadInput(f"{label}: file not found") from None
    except PermissionError:
        raise BadInput(f"{label}: permission denied") from None
    except BadInput:
        raise
    except OSError as exc:
        raise BadInput(f"{label}: cannot read the file ({exc.strerror or exc.__class__.__name__})") from None


def _allowed_formats() -> list[str]:
    Image.init()
    return [name for name in _FORMATS if name in Image.OPEN]


def _decode(fp: Any, label: str, max_pixels: int) -> Image.Image:
    """Open from the header, vet size and frames, then force a full decode."""
    try:
        # Pillow's own bomb check (global, host-configurable) may also fire
        # here; ours, in _check_pil, holds whatever the host set.
        image = Image.open(fp, formats=_allowed_formats())
    except Image.DecompressionBombError:
        raise BadInput(f"{label}: the image is too large to decode safely (limit {max_pixels // 1_000_000} megapixels)") from None
    except UnidentifiedImageError:
        raise BadInput(f"{label}: not an image file this tool can read (supported: {_SUPPORTED})") from None
    except MemoryError:
        raise
    except Exception:  # Pillow plugins raise many types on garbage headers
        raise BadInput(f"{label}: the image header is damaged") from None
    try:
        checked = _check_pil(image, label, max_pixels)
    except BaseException:
        image.close()
        raise
    if checked is not image:  # an upright copy was made; release the decoder
        image.close()
    return checked


def _check_pil(image: Image.Image, label: str, max_pixels: int) -> Image.Image:
    """Vet size and frame count, then decode all pixel data (catches truncation)."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadInput(f"{label}: the image has no pixels")
    if width * height > max_pixels:
        raise BadInput(
            f"{label}: the image is too large ({width}x{height} px; the limit is {max_pixels // 1_000_000} megapixels)"
        )
    try:
        # is_animated only looks for a second frame; n_frames may scan them all
        if hasattr(image, "is_animated"):
            multi = bool(image.is_animated)
        else:
            multi = int(getattr(image, "n_frames", 1) or 1) > 1
    except MemoryError:
        raise
    except Exception:
        raise BadInput(f"{label}: the image data is damaged or truncated") from None
    if multi and image.format not in _MULTI_FRAME_OK:
        if image.format == "TIFF":
            raise BadInput(f"{label}: multi-page images are not supported; save one page as PNG/JPEG")
        raise BadInput(f"{label}: animated images are not supported; save one frame as PNG/JPEG")
    if multi:
        image.seek(0)
    try:
        image.load()
    except MemoryError:
        raise
    except Exception:
        raise BadInput(f"{label}: the image data is damaged or truncated") from None
    try:
        upright = ImageOps.exif_transpose(image)
    except MemoryError:
        raise
    except Exception:  # broken EXIF must not cost the user the photo
        upright = None
    return upright if upright is not None else image


def _from_array(array: np.ndarray, label: str, max_pixels: int) -> Image.Image:
    if array.dtype != np.uint8:
        raise BadInput(f"{label}: arrays must be uint8 (got {array.dtype})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise BadInput(f"{label}: arrays must be HxW, HxWx3 (RGB) or HxWx4 (RGBA), got shape {tuple(array.shape)}")
    height, width = array.shape[:2]
    if height * width > max_pixels:
        raise BadInput(f"{label}: the image is too large ({width}x{height} px; the limit is {max_pixels // 1_000_000} megapixels)")
    if height == 0 or width == 0:
        raise BadInput(f"{label}: the image has no pixels")
    # uint8 HxW / HxWx3 / HxWx4 map to L / RGB / RGBA by themselves.
    return Image.fromarray(np.ascontiguousarray(array))


def _to_rgb(image: Image.Image, label: str, background: tuple[int, int, int]) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB without clipping or tinting.

    (Pillow itself already reduces 16-bit RGB/RGBA PNGs to 8 bits per channel
    by keeping the high byte, which is the correct scaling.)
    """
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I") or mode == "F":
        gray = Image.fromarray(_high_depth_to_uint8(np.asarray(image)))
        return gray.convert("RGB")
    has_alpha = "A" in image.getbands() or mode in ("RGBa", "La") or "transparency" in image.info
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError):
        raise BadInput(f"{label}: unsupported colour mode {mode}; save the photo as an RGB JPEG or PNG") from None


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit (or wider) grayscale to 0..255 instead of clipping.

    16-bit data uses its full 0..65535 range (value/257); 32-bit integer data
    wider than 16 bits and float data are scaled by their own maximum
    (floats in 0..1 by 255).
    """
    values = np.asarray(array, dtype=np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    values = np.clip(values, 0.0, None)
    top = float(values.max()) if values.size else 0.0
    if array.dtype.kind == "f":
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / top)
    elif top <= 65535.0:
        scale = 1.0 / 257.0
    else:
        scale = 255.0 / top
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
