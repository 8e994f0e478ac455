"""The command line end to end: tune on each family, generate with the result, inspect, errors."""

import json
import os

import pytest
import torch
from safetensors import safe_open

from celebbasis_ext.cli import main

from conftest import tiny_pipeline
from helpers import small_names_file


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for arch in ("tiny-sd1", "tiny-sd2", "tiny-sdxl"):
        folders[arch] = root / arch
        tiny_pipeline(arch).save_pretrained(folders[arch])
    return folders


def _run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _tensors(path):
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()


@pytest.mark.parametrize("arch,encoder,mode,keys", [
    ("tiny-sd1", "dlib", "paper", {"emb_params": [2, 32]}),
    ("tiny-sd2", "none", "direct", {"emb_params": [2, 48]}),
    ("tiny-sdxl", "dlib", "paper", {"clip_l": [2, 32], "clip_g": [2, 48]}),
])
def test_tune_writes_the_file_and_prints_its_path(capsys, tmp_path, model_folders, astronaut_path,
                                                  arch, encoder, mode, keys):
    out = tmp_path / "embeddings"
    code, stdout, stderr = _run(capsys, "tune", astronaut_path, "--model", model_folders[arch], "--name", "astrocbx",
                                "--out", out, "--steps", 6, "--face-encoder", encoder, "--mode", mode,
                                "--names", small_names_file(tmp_path))
    assert code == 0, stderr
    path = out / "astrocbx.safetensors"
    assert stdout.strip().splitlines()[-1] == str(path)
    tensors, meta = _tensors(path)
    assert {key: list(value.shape) for key, value in tensors.items()} == keys
    assert meta["mode"] == mode and meta["steps"] == "6" and meta["face_encoder"] == encoder
    assert str(astronaut_path) not in json.dumps(meta) and "astronaut" not in json.dumps(meta)

    code, stdout, _ = _run(capsys, "inspect", path, "--json")
    assert code == 0 and json.loads(stdout)["shapes"] == keys


def test_same_seed_same_file(capsys, tmp_path, model_folders, astronaut_path):
    names = small_names_file(tmp_path)
    files = []
    for folder in ("a", "b"):
        code, _, err = _run(capsys, "tune", astronaut_path, "--model", model_folders["tiny-sd1"], "--name", "twin",
                            "--out", tmp_path / folder, "--steps", 4, "--seed", 5, "--face-encoder", "dlib",
                            "--names", names)
        assert code == 0, err
        files.append(_tensors(tmp_path / folder / "twin.safetensors"))
    # safetensors writes header metadata in hash-map order, so compare contents, not bytes.
    (first, first_meta), (second, second_meta) = files
    assert first_meta == second_meta
    assert torch.equal(first["emb_params"], second["emb_params"])


def test_tuned_file_loads_in_diffusers_and_renders(capsys, tmp_path, model_folders, astronaut_path):
    out = tmp_path / "embeddings"
    for name in ("annacbx", "bobcbx"):
        code, _, err = _run(capsys, "tune", astronaut_path, "--model", model_folders["tiny-sdxl"], "--name", name,
                            "--out", out, "--steps", 3, "--face-encoder", "none", "--mode", "direct",
                            "--names", small_names_file(tmp_path))
        assert code == 0, err
    image = tmp_path / "two.png"
    code, stdout, err = _run(capsys, "generate", "--model", model_folders["tiny-sdxl"], "--embeddings", out,
                             "--prompt", "annacbx and bobcbx at the beach", "--steps", 2, "--out", image)
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(image)
    from PIL import Image

    assert Image.open(image).size == (64, 64)
    assert "annacbx" in err and "bobcbx" in err


def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, model_folders, astronaut_path):
    out = tmp_path / "embeddings"
    model = model_folders["tiny-sd1"]
    cases = [
        (["tune", astronaut_path, "--model", model, "--name", "../evil", "--out", out],
         "the name '../evil' must not contain path separators"),
        (["tune", astronaut_path, "--model", model, "--name", "ok", "--out", out, "--steps", 0],
         "steps must be a whole number from 1 to 20000, not 0"),
        (["tune", astronaut_path, "--model", model, "--name", "ok", "--out", out, "--lr", "nan"],
         "learning rate must be a number in (0, 1], not nan"),
        (["tune", astronaut_path, "--model", model, "--name", "ok", "--out", out, "--mode", "x"],
         "unknown mode 'x': choose paper or direct"),
        (["tune", tmp_path / "missing.jpg", "--model", model, "--name", "ok", "--out", out],
         "no such photo: "),
        (["tune", astronaut_path, "--model", tmp_path / "nope", "--name", "ok", "--out", out], "model not found: "),
        (["tune", astronaut_path, "--model", model, "--name", "ok", "--out", out, "--face-encoder", "none"],
         "face encoder 'none' works only with mode 'direct'"),
        (["inspect", tmp_path / "missing.safetensors"], "no such file: "),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]
    for argv, words in cases:
        code, stdout, stderr = _run(capsys, *argv)
        assert code == 2, (argv, stderr)
        lines = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in stderr, stderr
        assert words in lines[0], (argv, lines[0])
    assert not out.exists() or not any(out.iterdir())


def test_basis_command_reports_names_rank_and_cache(capsys, tmp_path, model_folders):
    code, stdout, err = _run(capsys, "basis", "--model", model_folders["tiny-sdxl"], "--json", "--list-names")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["family"] == "sdxl" and report["width"] == 80 and report["k"] == 80
    assert report["names_total"] >= 700 and 400 <= report["names_used"] < report["names_total"]
    assert len(report["names"]) == report["names_total"]
    used = [entry for entry in report["names"] if entry["used"]]
    assert len(used) == report["names_used"] and all(len(w) == 1 for e in used for w in e["tokens"])
    assert os.path.isfile(report["cache_path"])
    code, stdout, _ = _run(capsys, "basis", "--model", model_folders["tiny-sdxl"], "--json")
    assert json.loads(stdout)["from_cache"] is True
