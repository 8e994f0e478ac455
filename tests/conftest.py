"""Shared fixtures: tiny seeded models of each family, an isolated cache, photos."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    """With CI=true a skip outside tests/ci_skips.py's allow-list fails the run."""
    import ci_skips

    config.pluginmanager.register(ci_skips, "celebbasis-ci-skips")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Derived tokenizer files and bases go to a per-run folder, never ~/.cache."""
    folder = tmp_path_factory.mktemp("celebbasis-cache")
    previous = os.environ.get("CELEBBASIS_CACHE")
    os.environ["CELEBBASIS_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CELEBBASIS_CACHE", None)
    else:
        os.environ["CELEBBASIS_CACHE"] = previous


_PIPELINES: dict = {}


def tiny_pipeline(arch: str):
    """A fresh-per-session tiny pipeline (seed 0) of ``arch``; shared, so tests must not change it."""
    if arch not in _PIPELINES:
        from celebbasis_ext.architectures import build_pipeline

        _PIPELINES[arch] = build_pipeline(arch, seed=0)
    return _PIPELINES[arch]


def fresh_pipeline(arch: str):
    """A pipeline of its own (seed 0, the same weights as ``tiny_pipeline``) that a test may change:
    loading embeddings grows its tokenizers and text encoders. build_pipeline's tokenizers are
    shared (lru_cache), so each gets a copy."""
    import copy

    from celebbasis_ext.architectures import build_pipeline

    pipe = build_pipeline(arch, seed=0)
    pipe.tokenizer = copy.deepcopy(pipe.tokenizer)
    if getattr(pipe, "tokenizer_2", None) is not None:
        pipe.tokenizer_2 = copy.deepcopy(pipe.tokenizer_2)
    return pipe


@pytest.fixture(params=["tiny-sd1", "tiny-sd2", "tiny-sdxl"])
def any_pipeline(request):
    return tiny_pipeline(request.param)


@pytest.fixture
def sd1_pipeline():
    return tiny_pipeline("tiny-sd1")


@pytest.fixture
def sdxl_pipeline():
    return tiny_pipeline("tiny-sdxl")


@pytest.fixture(scope="session")
def astronaut_path(tmp_path_factory):
    """scikit-image's astronaut photo (one face) as a JPEG file."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=92)
    return path


def _host_standin(name: str):
    from host_helpers import load_standin

    standin = load_standin(name)
    yield standin
    standin.shutdown()  # its modules leave sys.modules: the next test boots a fresh host


@pytest.fixture
def forge():
    """The Forge (main / Neo) stand-in module: ``forge.boot(root, flavor=..., kind=...)``."""
    yield from _host_standin("forge")


@pytest.fixture
def sdnext():
    """The SD.Next stand-in module: ``sdnext.boot(root, checkpoint=...)``."""
    yield from _host_standin("sdnext")


@pytest.fixture(scope="session")
def planted_face_world():
    """benchmarks/planted_faces.py's quick world (framing "photo", recipe QUICK): a tiny SD1 that draws a
    few planted codes as real people; built once per session, shared, so tests must not change it."""
    pytest.importorskip("diffusers")
    pytest.importorskip("dlib")
    pytest.importorskip("insightface")  # its package ships the group photo the people come from
    from helpers import benchmark_module

    # CELEBBASIS_PLANTED_FACES_CACHE (a folder) keeps the taught world between runs on one machine
    cache = os.environ.get("CELEBBASIS_PLANTED_FACES_CACHE") or None
    world = benchmark_module("planted_faces", "planted_faces")
    return world.build_face_world(seed=0, framing="photo", quick=True, log=lambda *args: None, cache_dir=cache)
