"""Bad input through the command line: exit 2, one `error:` line, no traceback, nothing written.

And the photo variants that must work (16-bit, CMYK, palette, alpha, EXIF-rotated).
"""

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import checkpoints
from celebbasis_ext.cli import main
from conftest import tiny_pipeline
from helpers import small_names_file


def _png_header_only(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def world(tmp_path_factory, astronaut_path):
    """Models, photos and files for every case, built once."""
    root = tmp_path_factory.mktemp("bad")
    sd1, sdxl = tiny_pipeline("tiny-sd1"), tiny_pipeline("tiny-sdxl")
    files = {
        "model": checkpoints.write_diffusers_folder(sd1, root / "model"),
        "names": small_names_file(root),
        "astronaut": astronaut_path,
        "existing_dir": root / "existing",
    }
    single = checkpoints.write_single_file(sd1, root / "sd1.safetensors")
    files["lora"] = checkpoints.write_lora(root / "lora.safetensors")
    files["truncated_model"] = checkpoints.write_truncated(single, root / "truncated.safetensors")
    files["pickle_model"] = checkpoints.write_pickle(root / "model.ckpt")
    files["inpainting"] = checkpoints.write_inpainting(sd1, root / "inpainting.safetensors")
    files["refiner"] = checkpoints.write_sdxl_refiner(sdxl, root / "refiner.safetensors")
    (root / "zero.jpg").write_bytes(b"")
    files["zero"] = root / "zero.jpg"
    astronaut_bytes = Path(astronaut_path).read_bytes()
    (root / "truncated.jpg").write_bytes(astronaut_bytes[: len(astronaut_bytes) // 3])
    files["truncated_jpg"] = root / "truncated.jpg"
    (root / "text.jpg").write_text("this is not an image\n")
    files["text_jpg"] = root / "text.jpg"
    (root / "bomb.png").write_bytes(_png_header_only(100000, 100000))
    files["bomb"] = root / "bomb.png"
    frames = [Image.new("RGB", (96, 96), colour) for colour in ("red", "blue")]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["gif"] = root / "anim.gif"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((256, 256, 3)) * 40 + 100).astype(np.uint8)).save(root / "noface.png")
    files["noface"] = root / "noface.png"
    group = Path(__import__("insightface").__file__).parent / "data" / "images" / "t1.jpg"
    files["group"] = group
    head = Image.open(astronaut_path).convert("RGB").crop((130, 20, 330, 220))  # the astronaut's head
    small = Image.new("RGB", (600, 600), (120, 120, 120))
    small.paste(head.resize((100, 100)), (250, 250))  # dlib still finds the face: 44 px
    small.save(root / "smallface.png")
    files["smallface"] = root / "smallface.png"
    (root / "evil.pt").write_bytes(pickle.dumps({"emb_params": [1.0]}))
    files["pickle_embedding"] = root / "evil.pt"
    (root / "corrupt.safetensors").write_bytes(b"\xff" * 64)
    files["corrupt_embedding"] = root / "corrupt.safetensors"
    files["existing_dir"].mkdir()
    Image.open(astronaut_path).save(files["existing_dir"] / "taken.png")
    (files["existing_dir"] / "taken.safetensors").write_bytes(b"keep me")
    return files


def _tune(world, out, *extra, photo=None):
    return ["tune", str(photo or world["astronaut"]), "--model", str(world["model"]), "--out", str(out),
            "--names", str(world["names"]), "--steps", "2", *map(str, extra)]


CASES = {
    # photos
    "no face": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib", photo=w["noface"]),
    "several faces, no choice": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib", photo=w["group"]),
    "face index out of range": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib",
                                                  "--face-index", 9, photo=w["group"]),
    "face too small": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib", photo=w["smallface"]),
    "zero-byte file": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib", photo=w["zero"]),
    "truncated jpeg": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib", photo=w["truncated_jpg"]),
    "text named .jpg": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib", photo=w["text_jpg"]),
    "decompression bomb": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib", photo=w["bomb"]),
    "animated gif": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "dlib", photo=w["gif"]),
    "missing photo": lambda w, o: _tune(w, o, "--name", "a1", photo=Path(o).parent / "nope.jpg"),
    # names
    "empty name": lambda w, o: _tune(w, o, "--name", ""),
    "long name": lambda w, o: _tune(w, o, "--name", "n" * 65),
    "path separator": lambda w, o: _tune(w, o, "--name", "a/b"),
    "backslash": lambda w, o: _tune(w, o, "--name", "a\\b"),
    "dot dot": lambda w, o: _tune(w, o, "--name", ".."),
    "drive letter": lambda w, o: _tune(w, o, "--name", "C:x"),
    "NUL byte": lambda w, o: _tune(w, o, "--name", "a\x01b".replace("\x01", "\\x00")),
    "only dots": lambda w, o: _tune(w, o, "--name", "..."),
    "clashes with a file": lambda w, o: ["tune", str(w["astronaut"]), "--model", str(w["model"]), "--name", "taken",
                                         "--out", str(w["existing_dir"]), "--steps", "2"],
    # options
    "steps 0": lambda w, o: _tune(w, o, "--name", "a1", "--steps", 0),
    "steps negative": lambda w, o: _tune(w, o, "--name", "a1", "--steps", -3),
    "steps absurd": lambda w, o: _tune(w, o, "--name", "a1", "--steps", 10**9),
    "steps not a number": lambda w, o: _tune(w, o, "--name", "a1", "--steps", "many"),
    "learning rate NaN": lambda w, o: _tune(w, o, "--name", "a1", "--lr", "nan"),
    "unknown mode": lambda w, o: _tune(w, o, "--name", "a1", "--mode", "magic"),
    "unknown face encoder": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "retina"),
    "paper mode without encoder": lambda w, o: _tune(w, o, "--name", "a1", "--face-encoder", "none"),
    # models
    "model missing": lambda w, o: ["tune", str(w["astronaut"]), "--model", str(Path(o).parent / "none"),
                                   "--name", "a1", "--out", str(o)],
    "model is a LoRA": lambda w, o: ["tune", str(w["astronaut"]), "--model", str(w["lora"]), "--name", "a1",
                                     "--out", str(o)],
    "model truncated": lambda w, o: ["tune", str(w["astronaut"]), "--model", str(w["truncated_model"]),
                                     "--name", "a1", "--out", str(o)],
    "model is a pickle": lambda w, o: ["tune", str(w["astronaut"]), "--model", str(w["pickle_model"]),
                                       "--name", "a1", "--out", str(o)],
    "inpainting model": lambda w, o: ["tune", str(w["astronaut"]), "--model", str(w["inpainting"]), "--name", "a1",
                                      "--out", str(o)],
    "refiner model": lambda w, o: ["tune", str(w["astronaut"]), "--model", str(w["refiner"]), "--name", "a1",
                                   "--out", str(o)],
    # inspect
    "inspect corrupt": lambda w, o: ["inspect", str(w["corrupt_embedding"])],
    "inspect pickle": lambda w, o: ["inspect", str(w["pickle_embedding"])],
}


# the words the user must see on the one `error:` line, per case
MESSAGES = {
    "no face": ["no face found in photo"],
    "several faces, no choice": ["6 faces of similar size", "choose one with a face index 0-5"],
    "face index out of range": ["face index 9 is out of range", "6 faces (0-5, largest first)"],
    "face too small": ["face too small (44 px)", "at least 64 px"],
    "zero-byte file": ["zero.jpg", "the file is empty"],
    "truncated jpeg": ["truncated.jpg", "damaged or truncated"],
    "text named .jpg": ["text.jpg", "not an image file", "JPEG, PNG, WebP"],
    "decompression bomb": ["bomb.png", "too large to decode safely", "64 megapixels"],
    "animated gif": ["anim.gif", "animated images are not supported", "save one frame"],
    "missing photo": ["no such photo", "nope.jpg"],
    "empty name": ["the name is empty"],
    "long name": ["65 characters long", "at most 64"],
    "path separator": ["'a/b'", "must not contain path separators"],
    "backslash": ["must not contain path separators"],
    "dot dot": ["'..'", "must not contain path separators, drive letters or dots"],
    "drive letter": ["'C:x'", "drive letters"],
    "NUL byte": ["the name contains a NUL character"],
    "only dots": ["'...'", "dots"],
    "clashes with a file": ["taken.safetensors already exists", "choose another name or allow overwriting"],
    "steps 0": ["steps must be a whole number from 1 to 20000", "not 0"],
    "steps negative": ["steps must be a whole number from 1 to 20000", "not -3"],
    "steps absurd": ["steps must be a whole number from 1 to 20000", "not 1000000000"],
    "steps not a number": ["--steps", "invalid int value: 'many'"],
    "learning rate NaN": ["learning rate must be a number in (0, 1]", "not nan"],
    "unknown mode": ["unknown mode 'magic'", "paper or direct"],
    "unknown face encoder": ["unknown face encoder 'retina'", "auto, insightface, dlib, none"],
    "paper mode without encoder": ["face encoder 'none' works only with mode 'direct'"],
    "model missing": ["model not found"],
    "model is a LoRA": ["lora.safetensors is a LoRA", "not a full Stable Diffusion checkpoint"],
    "model truncated": ["truncated.safetensors is truncated", "download or copy it again"],
    "model is a pickle": ["model.ckpt is a pickled checkpoint", "convert it to .safetensors"],
    "inpainting model": ["inpainting.safetensors is an inpainting model", "use the base model"],
    "refiner model": ["refiner.safetensors is an SDXL refiner", "use an SDXL base model"],
    "inspect corrupt": ["corrupt.safetensors is not a readable .safetensors file"],
    "inspect pickle": ["evil.pt is a pickle file", "only .safetensors embeddings are read"],
}


def test_every_case_pins_its_message():
    assert set(MESSAGES) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, world, tmp_path, capsys):
    out = tmp_path / "out"
    argv = CASES[case](world, out)
    if case == "NUL byte":
        argv[argv.index("--name") + 1] = "a\x00b"
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"{case}: exit {code}: {err}"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for words in MESSAGES[case]:
        assert words in errors[0], f"{case}: {words!r} not in {errors[0]!r}"
    assert not out.exists() or not any(out.iterdir())
    assert (world["existing_dir"] / "taken.safetensors").read_bytes() == b"keep me"


def _variant(astronaut, kind, folder):
    image = Image.open(astronaut).convert("RGB")
    path = folder / f"{kind}.png"
    if kind == "16bit":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(gray).save(path)
    elif kind == "cmyk":
        path = folder / "cmyk.jpg"
        image.convert("CMYK").save(path, quality=95)
    elif kind == "palette":
        image.convert("P", palette=Image.ADAPTIVE).save(path)
    elif kind == "alpha":
        rgba = image.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(path)
    elif kind == "exif":
        path = folder / "rotated.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
        image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    return path


@pytest.mark.parametrize("kind", ["16bit", "cmyk", "palette", "alpha", "exif"])
def test_photo_variants_work(kind, world, tmp_path, capsys):
    photo = _variant(world["astronaut"], kind, tmp_path)
    out = tmp_path / "out"
    code = main(_tune(world, out, "--name", f"v{kind}", "--face-encoder", "dlib", photo=photo))
    err = capsys.readouterr().err
    assert code == 0, err
    assert (out / f"v{kind}.safetensors").is_file()
