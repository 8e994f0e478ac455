"""The exported file: format per family, metadata, atomic writes, names, and reading it back."""

import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open

from celebbasis_ext.adapter import ModelFamily
from celebbasis_ext.errors import BadInput
from celebbasis_ext.identity import Identity, describe_identity, load_identity, save_identity, validate_name


def _identity(family=ModelFamily.SD1, widths=(768,), name="anna_k"):
    embedding = torch.randn(2, sum(widths))
    return Identity.from_embedding(name, family, embedding, widths, torch.rand(2, 8), steps=5, seed=1, mode="paper")


@pytest.mark.parametrize("family,widths,expected", [
    (ModelFamily.SD1, (768,), {"emb_params": [2, 768]}),
    (ModelFamily.SD2, (1024,), {"emb_params": [2, 1024]}),
    (ModelFamily.SDXL, (768, 1280), {"clip_l": [2, 768], "clip_g": [2, 1280]}),
])
def test_file_format_per_family(tmp_path, family, widths, expected):
    identity = _identity(family, widths)
    path = save_identity(identity, tmp_path)
    assert path == tmp_path / "anna_k.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        assert {key: list(handle.get_tensor(key).shape) for key in handle.keys()} == expected
        meta = handle.metadata()
    assert meta["method"] == "celebbasis" and meta["family"] == family.value and meta["steps"] == "5"
    assert len(json.loads(meta["coefficients"])) == 2 and meta["k"] == "8"
    back = load_identity(path)
    assert back.family == family and back.name == "anna_k"
    for key, value in identity.vectors.items():
        assert torch.equal(back.vectors[key], value)
    assert os.listdir(tmp_path) == ["anna_k.safetensors"]  # no temporary file left


def test_sdxl_split_keeps_order(tmp_path):
    embedding = torch.arange(2 * 80, dtype=torch.float32).view(2, 80)
    identity = Identity.from_embedding("x1", ModelFamily.SDXL, embedding, (32, 48))
    assert torch.equal(identity.vectors["clip_l"], embedding[:, :32])
    assert torch.equal(identity.vectors["clip_g"], embedding[:, 32:])


def test_existing_file_kept_unless_overwrite(tmp_path):
    first = save_identity(_identity(), tmp_path)
    original = first.read_bytes()
    with pytest.raises(BadInput, match="already exists"):
        save_identity(_identity(), tmp_path)
    assert first.read_bytes() == original
    save_identity(_identity(), tmp_path, overwrite=True)
    assert first.read_bytes() != original


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    previous = save_identity(_identity(), tmp_path)
    content = previous.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError):
        save_identity(_identity(), tmp_path, overwrite=True)
    assert os.listdir(tmp_path) == ["anna_k.safetensors"] and previous.read_bytes() == content


@pytest.mark.parametrize("name, words", [
    ("", "the name is empty"), ("   ", "the name is empty"),
    ("a/b", "must not contain path separators"), ("a\\b", "must not contain path separators"),
    ("..", "drive letters or dots"), ("...", "drive letters or dots"), ("C:evil", "drive letters"),
    ("x" * 65, "65 characters long; use at most 64"), ("bad\x00name", "the name contains a NUL character"),
    ("sp ace", "may only use letters, digits, '_' and '-'"), ("-dash", "starting with a letter or digit"),
    ("con", "'con' is reserved on Windows"), ("a..b", "'a..b' must not contain"),
])
def test_bad_names_refused(name, words):
    with pytest.raises(BadInput) as refused:
        validate_name(name)
    assert words in str(refused.value)


@pytest.mark.parametrize("name", ["anna", "Anna_K-2", "x" * 64, "7up"])
def test_good_names(name):
    assert validate_name(name) == name


def test_inspect_refuses_pickles_and_garbage(tmp_path):
    pickled = tmp_path / "evil.pt"
    pickled.write_bytes(pickle.dumps({"emb_params": [1, 2]}))
    with pytest.raises(BadInput, match="pickle"):
        load_identity(pickled)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(BadInput, match="not a readable"):
        load_identity(corrupt)
    import safetensors.torch

    other = tmp_path / "lora.safetensors"
    safetensors.torch.save_file({"a": torch.zeros(1), "b": torch.zeros(1)}, str(other))
    with pytest.raises(BadInput, match="not a Textual-Inversion"):
        load_identity(other)


def test_metadata_never_holds_the_photo(tmp_path):
    identity = _identity()
    info = describe_identity(load_identity(save_identity(identity, tmp_path)))
    assert info["shapes"] == {"emb_params": [2, 768]}
    assert not any("photo" in key and key != "photos" for key in info["metadata"])


def test_file_mode_follows_umask_not_mkstemp(tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_identity(_identity(), tmp_path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
