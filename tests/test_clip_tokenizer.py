"""Where the CLIP BPE vocabulary comes from when a single-file checkpoint has none.

Order: our derived copy, open_clip's merges file, a CLIP tokenizer in the Hugging Face cache, and
(online) one download of that tokenizer's two files through huggingface_hub into its standard cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from celebbasis_ext import clip_tokenizer
from celebbasis_ext.errors import ModelFilesMissing

TOM_HANKS = [49406, 2435, 29943, 49407]  # SD's tokenizer on "Tom Hanks"
REPO_FOLDER = "models--" + clip_tokenizer.HF_TOKENIZER_REPO.replace("/", "--")


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory) -> Path:
    """vocab.json / merges.txt as the hub serves them (derived here from open_clip's merges file)."""
    bpe = clip_tokenizer.find_bpe_file()
    if bpe is None:
        pytest.skip("open_clip_torch (the local source of the CLIP merges file) is not installed")
    return clip_tokenizer.write_vocab_files(bpe, tmp_path_factory.mktemp("hub-files"))


@pytest.fixture
def nothing_local(tmp_path, monkeypatch):
    """No derived copy, no open_clip, an empty Hugging Face cache."""
    import huggingface_hub.constants

    monkeypatch.setenv("CELEBBASIS_CACHE", str(tmp_path / "ours"))
    monkeypatch.setattr(clip_tokenizer, "find_bpe_file", lambda: None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _online(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _fake_hub(cache: Path, source: Path, calls: list):
    """hf_hub_download's contract: write into the cache's snapshot layout, return the file's path."""
    revision = hashlib.sha1(b"clip").hexdigest()

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        root = cache / ("models--" + repo_id.replace("/", "--"))
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(revision)
        target = root / "snapshots" / revision / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / filename).read_bytes())
        return str(target)

    return download


def _ids(folder: Path) -> list:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    return tokenizer("Tom Hanks").input_ids


def test_open_clip_merges_file_gives_sd_ids(reference_files):
    assert _ids(reference_files) == TOM_HANKS


def test_downloaded_once_into_the_hub_cache(nothing_local, reference_files, monkeypatch):
    import huggingface_hub

    _online(monkeypatch)
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_hub(nothing_local, reference_files, calls))
    folder = clip_tokenizer.tokenizer_files_dir()
    assert calls == [(clip_tokenizer.HF_TOKENIZER_REPO, "vocab.json"), (clip_tokenizer.HF_TOKENIZER_REPO, "merges.txt")]
    assert REPO_FOLDER in folder.parts and folder.is_relative_to(nothing_local)
    assert _ids(folder) == TOM_HANKS
    # the next call finds the cached copy and downloads nothing, online or not
    assert clip_tokenizer.tokenizer_files_dir() == folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert clip_tokenizer.tokenizer_files_dir() == folder
    assert len(calls) == 2


def test_offline_refuses_with_the_ways_out(nothing_local, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("downloaded while offline"))
    with pytest.raises(ModelFilesMissing) as info:
        clip_tokenizer.tokenizer_files_dir()
    message = str(info.value)
    assert "\n" not in message
    for part in ("offline", clip_tokenizer.HF_TOKENIZER_REPO, "diffusers model folder", "vocab.json and merges.txt"):
        assert part in message
    with pytest.raises(ModelFilesMissing, match="downloads are off"):
        clip_tokenizer.tokenizer_files_dir(allow_download=False)


def test_failed_download_is_one_line_and_leaves_nothing(nothing_local, monkeypatch):
    import huggingface_hub

    _online(monkeypatch)

    def unreachable(*args, **kwargs):
        raise OSError("Name or service not known\nmore detail")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(ModelFilesMissing) as info:
        clip_tokenizer.tokenizer_files_dir()
    message = str(info.value)
    assert "\n" not in message and "could not download" in message and "Name or service not known" in message
    assert "diffusers model folder" in message
    assert not (clip_tokenizer.cache_dir() / "clip_tokenizer").exists()


def test_a_tokenizer_already_in_the_hub_cache_is_used_offline(nothing_local, reference_files, monkeypatch):
    import huggingface_hub

    _fake_hub(nothing_local, reference_files, [])(clip_tokenizer.HF_TOKENIZER_REPO, "vocab.json")
    _fake_hub(nothing_local, reference_files, [])(clip_tokenizer.HF_TOKENIZER_REPO, "merges.txt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("downloaded"))
    folder = clip_tokenizer.tokenizer_files_dir()
    assert folder.is_relative_to(nothing_local) and _ids(folder) == TOM_HANKS
