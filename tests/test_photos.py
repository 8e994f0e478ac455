"""load_photo: every way a photo can arrive, and every way it can be bad."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from celebbasis_ext.errors import BadInput
from celebbasis_ext.photos import MAX_PIXELS, describe_source, load_photo


def _noise(width=96, height=80, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _encode(image, fmt, **kwargs):
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_header(width, height, bit_depth=8, colour_type=2):
    """A PNG that is only a signature, an IHDR (with a valid CRC) and IEND: no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- sources


def test_path_bytes_filelike_pil_and_array_sources(tmp_path):
    image = _noise()
    data = _encode(image, "PNG")
    path = tmp_path / "me.png"
    path.write_bytes(data)
    expected = np.asarray(image)
    for source in (path, str(path), data, bytearray(data), io.BytesIO(data), image, expected):
        out = load_photo(source)
        assert out.mode == "RGB" and out.size == (96, 80)
        assert np.array_equal(np.asarray(out), expected)


def test_result_carries_no_path_or_metadata(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # camera make
    path = tmp_path / "private_name.jpg"
    _noise().save(path, "JPEG", exif=exif.tobytes())
    out = load_photo(path)
    assert out.info == {}
    assert "private_name" not in repr(out) and not getattr(out, "filename", "")


def test_caller_image_and_stream_are_left_alone():
    image = _noise().convert("RGBA")
    stream = io.BytesIO(_encode(_noise(), "PNG"))
    load_photo(image)
    load_photo(stream)
    assert image.mode == "RGBA"
    assert not stream.closed


def test_labels_are_base_names():
    assert describe_source("/some/where/photo.jpg") == "photo.jpg"
    assert describe_source(b"123") == "photo"
    with pytest.raises(BadInput, match=r"^holiday\.png: "):
        load_photo(b"not an image", label="holiday.png")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_common_formats(fmt):
    image = _noise()
    out = load_photo(_encode(image, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})))
    assert out.mode == "RGB" and out.size == image.size
    if fmt in ("PNG", "BMP", "TIFF"):
        assert np.array_equal(np.asarray(out), np.asarray(image))


def test_mpo_camera_photo_uses_the_main_frame():
    main, preview = Image.new("RGB", (90, 70), (200, 30, 30)), Image.new("RGB", (90, 70), (0, 0, 200))
    data = _encode(main, "MPO", save_all=True, append_images=[preview])
    out = np.asarray(load_photo(data)).astype(int)
    assert out[..., 0].mean() > 150 and out[..., 2].mean() < 80


# ---------------------------------------------------------------- colour modes


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (70, 1))
    data = _encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(load_photo(data))
    assert out.dtype == np.uint8 and out.shape == (70, 128, 3)
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[64] - 129) <= 2  # mid-grey stays mid-grey
    assert np.all(np.diff(row) >= 0) and len(np.unique(row)) > 100


def test_thirty_two_bit_integer_image_scaled():
    values = np.tile(np.linspace(0, 65535, 100), (80, 1)).astype(np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    out = np.asarray(load_photo(image))
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255 and 120 < out[0, 50, 0] < 136


def test_cmyk_jpeg():
    red = Image.new("CMYK", (80, 80), (0, 255, 255, 0))
    out = np.asarray(load_photo(_encode(red, "JPEG", quality=95))).astype(int)
    assert out[..., 0].mean() > 235 and out[..., 1].mean() < 25 and out[..., 2].mean() < 25


def test_palette_and_grayscale_and_bilevel():
    palette = _noise().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    for image in (palette, _noise().convert("L"), _noise().convert("1")):
        out = load_photo(_encode(image, "PNG"))
        assert out.mode == "RGB"
        assert np.array_equal(np.asarray(out), np.asarray(image.convert("RGB")))


def test_transparency_composited_on_white():
    rgba = np.zeros((80, 80, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, 40:, 3] = 255  # right half opaque red, left half transparent
    for source in (_encode(Image.fromarray(rgba), "PNG"), rgba):
        out = np.asarray(load_photo(source))
        assert tuple(out[10, 10]) == (255, 255, 255)
        assert tuple(out[10, 70]) == (255, 0, 0)
    half = rgba.copy()
    half[..., 3] = 128
    assert tuple(np.asarray(load_photo(half))[5, 5]) == (255, 127, 127)
    la = Image.fromarray(rgba).convert("LA")
    assert tuple(np.asarray(load_photo(_encode(la, "PNG")))[10, 10]) == (255, 255, 255)


def test_palette_with_transparency():
    image = Image.new("P", (70, 70), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (35, 0, 70, 70))
    data = _encode(image, "PNG", transparency=0)
    out = np.asarray(load_photo(data))
    assert tuple(out[5, 5]) == (255, 255, 255) and tuple(out[5, 60]) == (0, 255, 0)


def test_grayscale_array():
    out = load_photo(np.full((70, 90), 77, dtype=np.uint8))
    assert out.size == (90, 70) and tuple(np.asarray(out)[0, 0]) == (77, 77, 77)


def test_exif_orientation_applied():
    # top half red, bottom half blue, stored sideways with orientation 6
    # ("rotate 90 degrees clockwise to display"): red must end up on the right.
    pixels = np.zeros((80, 120, 3), dtype=np.uint8)
    pixels[:40] = (255, 0, 0)
    pixels[40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())
    out = np.asarray(load_photo(data)).astype(int)
    assert out.shape == (120, 80, 3)
    assert out[:, 60:, 0].mean() > 200 and out[:, 60:, 2].mean() < 60  # right: red
    assert out[:, :20, 2].mean() > 200 and out[:, :20, 0].mean() < 60  # left: blue


# ---------------------------------------------------------------- refusals


def test_animated_images_rejected():
    frames = [Image.new("RGB", (80, 80), c) for c in ((255, 0, 0), (0, 255, 0))]
    for fmt in ("GIF", "WEBP", "PNG"):
        data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        with pytest.raises(BadInput, match="animated images are not supported; save one frame as PNG/JPEG"):
            load_photo(data)
    assert load_photo(_encode(frames[0], "GIF")).size == (80, 80)  # one frame is fine


def test_multipage_tiff_rejected():
    pages = [Image.new("RGB", (80, 80), c) for c in ((255, 0, 0), (0, 255, 0))]
    with pytest.raises(BadInput, match="multi-page"):
        load_photo(_encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))


def test_empty_inputs(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for source in (empty, b"", io.BytesIO(b"")):
        with pytest.raises(BadInput, match="empty"):
            load_photo(source)


def test_truncated_jpeg():
    data = _encode(_noise(400, 300), "JPEG", quality=90)
    with pytest.raises(BadInput, match="damaged or truncated"):
        load_photo(data[: len(data) // 2])


def test_truncated_png():
    data = _encode(_noise(400, 300), "PNG")
    with pytest.raises(BadInput, match="damaged|truncated"):
        load_photo(data[: len(data) // 2])


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("definitely not a JPEG\n" * 10)
    with pytest.raises(BadInput, match=r"photo\.jpg: not an image file"):
        load_photo(path)


def test_postscript_is_not_handed_to_ghostscript():
    with pytest.raises(BadInput, match="not an image file"):
        load_photo(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_photo(tmp_path / "nope.png")
    with pytest.raises(BadInput, match="folder"):
        load_photo(tmp_path)


def test_wrong_types():
    with pytest.raises(BadInput, match="uint8"):
        load_photo(np.zeros((80, 80, 3), dtype=np.float32))
    with pytest.raises(BadInput, match="HxW"):
        load_photo(np.zeros((80, 80, 2), dtype=np.uint8))
    with pytest.raises(BadInput, match="expected a path"):
        load_photo(12345)
    with pytest.raises(BadInput, match="binary mode"):
        load_photo(io.StringIO("text"))


def test_too_small():
    with pytest.raises(BadInput, match=r"too small \(63x100 px\)"):
        load_photo(np.zeros((100, 63, 3), dtype=np.uint8))
    assert load_photo(np.zeros((64, 64, 3), dtype=np.uint8)).size == (64, 64)


def test_decompression_bomb_rejected_from_the_header(monkeypatch):
    """A 100000x100000 PNG header must be refused before any pixel is decoded."""
    data = _png_header(100_000, 100_000)

    def no_decoding(self):
        raise AssertionError("pixel data must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    start = time.perf_counter()
    with pytest.raises(BadInput, match="too large"):
        load_photo(data)
    # hosts sometimes disable Pillow's own guard; ours must still hold
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(BadInput, match=r"too large \(100000x100000 px; the limit is 64 megapixels\)"):
        load_photo(data)
    assert time.perf_counter() - start < 1.0


def test_own_limit_is_below_pillows_and_global_untouched(monkeypatch):
    before = Image.MAX_IMAGE_PIXELS
    side = int(np.sqrt(MAX_PIXELS)) + 10  # over our limit, under Pillow's default
    with pytest.raises(BadInput, match="64 megapixels"):
        load_photo(_png_header(side, side))
    with pytest.raises(BadInput, match="too large"):
        load_photo(_png_header(200, 200), max_pixels=100 * 100)
    assert Image.MAX_IMAGE_PIXELS == before
    with pytest.raises(BadInput, match="too large"):
        load_photo(np.zeros((200, 200, 3), dtype=np.uint8), max_pixels=100 * 100)


def test_messages_are_one_line(tmp_path):
    name = tmp_path / "bad\nname.jpg"
    name.write_bytes(b"")
    with pytest.raises(BadInput) as info:
        load_photo(name)
    assert "\n" not in str(info.value)
