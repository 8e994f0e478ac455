"""``--model`` as a Hugging Face id: read from huggingface_hub's cache layout, downloaded once (with a
progress bar, only configs and .safetensors weights), refused offline when not cached.

No network: the cache is the real layout (refs, blobs, snapshots) in a temporary ``HF_HUB_CACHE``, read by
huggingface_hub's own ``snapshot_download``; only its network part is replaced by a fake Hub that writes
that layout, so what is asked for and what is shown can be checked.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import filter_repo_objects

import checkpoints
from conftest import tiny_pipeline
from celebbasis_ext import cli
from celebbasis_ext.errors import BadInput, ModelFilesMissing
from celebbasis_ext.loading import load_pipeline
from celebbasis_ext.loading.hub import HubModel, parse_hub_id

REAL_SNAPSHOT_DOWNLOAD = huggingface_hub.snapshot_download


def write_cache_entry(cache: Path, repo_id: str, files: dict, commit: str = "0" * 40) -> Path:
    """huggingface_hub's cache layout: ``models--owner--name/{blobs,snapshots/COMMIT,refs/main}``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for relative, source in files.items():
        data = Path(source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def folder_files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """The tiny SD1 pipeline as a diffusers folder and as one single file, saved by the tests."""
    root = tmp_path_factory.mktemp("hub-sources")
    pipe = tiny_pipeline("tiny-sd1")
    folder = checkpoints.write_diffusers_folder(pipe, root / "tiny-sd1")
    single = checkpoints.write_single_file(pipe, root / "tiny-sd1.safetensors")
    return SimpleNamespace(pipe=pipe, folder=folder, single=single)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # no local path may shadow an id
    return cache


class FakeHub:
    """Stands in for the network half of ``snapshot_download``: a cache lookup goes to the real function,
    a download selects files with huggingface_hub's own pattern filter and writes the real cache layout."""

    def __init__(self, cache: Path, repos: dict):
        self.cache, self.repos, self.requests, self.lookups = cache, repos, [], []

    def snapshot_download(self, repo_id, *, revision=None, allow_patterns=None, local_files_only=False,
                          tqdm_class=None, **kwargs):
        if local_files_only:
            self.lookups.append(repo_id)
            return REAL_SNAPSHOT_DOWNLOAD(repo_id, revision=revision, allow_patterns=allow_patterns,
                                          local_files_only=True, **kwargs)
        self.requests.append((repo_id, list(allow_patterns or [])))
        if repo_id not in self.repos:
            raise RepositoryNotFoundError("404 Repository Not Found",
                                          response=SimpleNamespace(headers={}, status_code=404, request=None))
        files = self.repos[repo_id]
        chosen = list(filter_repo_objects(sorted(files), allow_patterns=allow_patterns))
        assert tqdm_class is not None, "a download must show progress"
        bar = tqdm_class(total=len(chosen), desc=f"Fetching {len(chosen)} files")
        for relative in chosen:
            write_cache_entry(self.cache, repo_id, {relative: files[relative]})
            bar.update(1)
        bar.close()
        return str(self.cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / ("0" * 40))


def _same_weights(pipe, original) -> None:
    for name in ("unet", "vae", "text_encoder"):
        expected = getattr(original, name).state_dict()
        loaded = getattr(pipe, name).state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], value) for key, value in expected.items()), name


def test_ids_and_paths_are_told_apart():
    assert parse_hub_id("someone/tiny-sd1") == HubModel("someone/tiny-sd1")
    assert parse_hub_id("someone/repo/sub/model.safetensors") == HubModel("someone/repo", "sub/model.safetensors")
    assert parse_hub_id("https://huggingface.co/someone/repo/blob/v2/model.safetensors") == \
        HubModel("someone/repo", "model.safetensors", "v2")
    for local in ("models/sd15.safetensors", "./someone/tiny", "/abs/someone/tiny", "~/models/x", "sd15",
                  "a/../b", "someone//x", "C:\\models\\x"):
        assert parse_hub_id(local) is None, local


def test_cached_folder_and_file_load_offline(tiny_repo, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_cache_entry(hub_cache, "someone/tiny-sd1", folder_files(tiny_repo.folder))
    write_cache_entry(hub_cache, "someone/checkpoints", {"sd/tiny-sd1.safetensors": tiny_repo.single})

    pipe = load_pipeline("someone/tiny-sd1", device="cpu")
    _same_weights(pipe, tiny_repo.pipe)
    assert pipe.celebbasis_model_info.name == "someone/tiny-sd1"
    assert str(hub_cache) in pipe.celebbasis_model_info.path

    from_file = load_pipeline("someone/checkpoints/sd/tiny-sd1.safetensors", device="cpu")
    _same_weights(from_file, tiny_repo.pipe)
    assert from_file.celebbasis_model_info.source == "single_file"


def test_not_cached_offline_is_refused_in_one_line_without_a_download(hub_cache, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub = FakeHub(hub_cache, {})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    code = cli.main(["basis", "--model", "someone/not-here", "--offline", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_BAD_INPUT
    assert err.startswith("error: model not found: someone/not-here") and "\n" not in err
    assert "not in the Hugging Face cache" in err and "--offline or HF_HUB_OFFLINE=1" in err
    assert hub.requests == [] and hub.lookups  # looked in the cache, asked the network nothing
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # --offline also keeps diffusers and transformers offline


def test_partly_cached_offline_is_named_as_such(tiny_repo, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = {k: v for k, v in folder_files(tiny_repo.folder).items() if not k.startswith("unet/")}
    write_cache_entry(hub_cache, "someone/tiny-sd1", files)
    with pytest.raises(ModelFilesMissing, match="only partly in the Hugging Face cache"):
        load_pipeline("someone/tiny-sd1", device="cpu")


def test_a_diffusers_repo_is_downloaded_once_configs_and_safetensors_only(tiny_repo, hub_cache, monkeypatch,
                                                                          capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    decoy = checkpoints.write_pickle(tmp_path / "decoy.bin")
    files = folder_files(tiny_repo.folder)
    unet_weights = files["unet/diffusion_pytorch_model.safetensors"]
    files.update({  # what SD repositories also hold, none of which is needed
        "unet/diffusion_pytorch_model.bin": decoy, "text_encoder/pytorch_model.bin": decoy,
        "unet/diffusion_pytorch_model.fp16.safetensors": unet_weights,
        "unet/diffusion_pytorch_model.non_ema.safetensors": unet_weights,
        "safety_checker/model.safetensors": unet_weights, "v1-5-pruned.ckpt": decoy,
        "v1-5-pruned-emaonly.safetensors": tiny_repo.single,
    })
    hub = FakeHub(hub_cache, {"someone/tiny-sd1": files})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)

    pipe = load_pipeline("someone/tiny-sd1", device="cpu")
    _same_weights(pipe, tiny_repo.pipe)
    assert len(hub.requests) == 1
    snapshot = hub_cache / "models--someone--tiny-sd1" / "snapshots" / ("0" * 40)
    fetched = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert fetched == sorted(k for k in folder_files(tiny_repo.folder))  # exactly the pipeline, nothing else
    err = capsys.readouterr().err
    assert f"someone/tiny-sd1: Fetching {len(fetched)} files" in err and "100%" in err

    load_pipeline("someone/tiny-sd1", device="cpu")  # the second time from the cache, no network
    assert len(hub.requests) == 1


def test_fp16_only_unet_fetches_the_fp16_variant(tiny_repo, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    files = folder_files(tiny_repo.folder)
    half = checkpoints._save({k: v.half() for k, v in tiny_repo.pipe.unet.state_dict().items()},
                             hub_cache.parent / "unet.fp16.safetensors")
    files["unet/diffusion_pytorch_model.fp16.safetensors"] = half
    del files["unet/diffusion_pytorch_model.safetensors"]
    hub = FakeHub(hub_cache, {"someone/half": files})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    pipe = load_pipeline("someone/half", device="cpu")
    assert [any("fp16" in p for p in patterns) for _, patterns in hub.requests] == [False, True]
    assert pipe.unet.dtype == torch.float32
    expected = tiny_repo.pipe.unet.state_dict()
    assert all(torch.equal(pipe.unet.state_dict()[k], v.half().float()) for k, v in expected.items())


def test_single_file_download_and_refusals(tiny_repo, hub_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    decoy = checkpoints.write_pickle(tmp_path / "decoy.ckpt")
    hub = FakeHub(hub_cache, {"someone/ckpts": {"tiny.safetensors": tiny_repo.single, "tiny.ckpt": decoy,
                                                "other.safetensors": tiny_repo.single}})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)

    pipe = load_pipeline("someone/ckpts/tiny.safetensors", device="cpu")
    _same_weights(pipe, tiny_repo.pipe)
    assert hub.requests == [("someone/ckpts", ["tiny.safetensors"])]

    with pytest.raises(BadInput, match="pickled checkpoints are never loaded"):
        load_pipeline("someone/ckpts/tiny.ckpt", device="cpu")
    with pytest.raises(BadInput, match="model not found: someone/missing is neither a local path nor"):
        load_pipeline("someone/missing", device="cpu")
    with pytest.raises(BadInput, match="not a diffusers repository.*someone/ckpts/FILE.safetensors"):
        load_pipeline("someone/ckpts", device="cpu")
    assert [r for r, _ in hub.requests] == ["someone/ckpts", "someone/missing", "someone/ckpts"]


def test_no_connection_is_one_line(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def unreachable(repo_id, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub,\nand ...")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelFilesMissing) as caught:
        load_pipeline("someone/tiny-sd1", device="cpu")
    assert str(caught.value).startswith("could not download someone/tiny-sd1 from Hugging Face")
    assert "\n" not in str(caught.value)


def test_a_local_path_wins_over_an_id(tiny_repo, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub = FakeHub(hub_cache, {})
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    shutil.copytree(tiny_repo.folder, Path("someone") / "tiny-sd1")
    load_pipeline("someone/tiny-sd1", device="cpu")
    assert hub.requests == [] and hub.lookups == []
