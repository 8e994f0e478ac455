"""`celebbasis doctor`, `celebbasis download`, the face-model download's progress, and the missing-package message."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import onnx_standins as standins
from celebbasis_ext import cli, doctor
from celebbasis_ext.doctor import MISSING, NOTE, OK, OPTIONAL
from celebbasis_ext.face import ENCODERS, load_face_encoder, model_files
from test_face import _sha, _zip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    return standins.write_buffalo_standins(tmp_path_factory.mktemp("buffalo_l"))


@pytest.fixture
def clean_home(tmp_path, monkeypatch):
    """No face models, caches or WebUI anywhere the checks look, unless a test puts them there."""
    for name in ("home", "cwd", "cache"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CELEBBASIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INSIGHTFACE_HOME", raising=False)
    monkeypatch.delenv(model_files.ENV_WEBUI_ROOT, raising=False)
    for name in (model_files.ENV_URL, model_files.ENV_SHA256):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def _no_dlib(monkeypatch):
    entry = ENCODERS["dlib"]
    monkeypatch.setitem(ENCODERS, "dlib", dataclasses.replace(
        entry, packages=(("celebbasis_no_such_module", "dlib-bin"),), find=lambda models_dir, webui_root: None))


def _by_topic(findings, topic):
    return [item for item in findings if item.topic == topic]


def _place_buffalo(folder: Path, source: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in model_files.REQUIRED_FILES:
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


# ---------------------------------------------------------------- the checks


def test_face_encoders_found_where_they_are_and_fixes_for_the_rest(clean_home, standin_dir, monkeypatch):
    _no_dlib(monkeypatch)
    models = clean_home / "models"
    folder = _place_buffalo(models / "buffalo_l", standin_dir)
    findings = doctor.check_face_encoders(models)
    (insight,) = _by_topic(findings, "face encoder insightface")
    assert insight.status == OK and str(folder) in insight.found
    (dlib,) = _by_topic(findings, "face encoder dlib")
    assert dlib.status == OPTIONAL and dlib.fix == "pip install dlib-bin"
    (auto,) = _by_topic(findings, "face encoder")
    assert auto.status == OK and "auto uses insightface" in auto.found

    for name in model_files.REQUIRED_FILES:
        (folder / name).unlink()
    findings = doctor.check_face_encoders(models)
    (insight,) = _by_topic(findings, "face encoder insightface")
    assert insight.status == OPTIONAL and str(models) in insight.found
    assert insight.fix == f"celebbasis download face-models --models-dir {models}"
    (auto,) = _by_topic(findings, "face encoder")
    assert auto.status == MISSING and auto.fix == "pip install dlib-bin face_recognition_models"


def test_dlib_from_its_package(clean_home):
    if not ENCODERS["dlib"].available():
        pytest.skip("dlib or face_recognition_models is not installed")
    findings = doctor.check_face_encoders(clean_home / "nothing")
    (dlib,) = _by_topic(findings, "face encoder dlib")
    assert dlib.status == OK and "face_recognition_models" in dlib.found
    assert "auto uses dlib" in _by_topic(findings, "face encoder")[0].found


def test_torch_and_its_device():
    (found,) = doctor.check_torch()[:1]
    assert found.status == OK and found.found.startswith(torch.__version__)
    device = "cuda" if torch.cuda.is_available() else "the CPU"
    assert f"tuning runs on {device}" in found.found


def test_torch_missing_names_the_install_command(monkeypatch):
    real = doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    (found,) = doctor.check_torch()
    assert found.status == MISSING and found.fix.startswith("pip install torch")
    assert "pytorch.org" in found.fix


def test_missing_package_message_names_the_command():
    assert "`pip install torch`" in doctor.missing_package_message("torch._C")
    assert "pytorch.org" in doctor.missing_package_message("torch")
    assert '"diffusers>=0.28"' in doctor.missing_package_message("diffusers.pipelines")
    assert "`pip install onnxruntime`" in doctor.missing_package_message("onnxruntime")
    assert "`pip install somethingelse`" in doctor.missing_package_message("somethingelse")


def test_tokenizer_offline_without_files_is_missing(clean_home, monkeypatch):
    from celebbasis_ext import clip_tokenizer

    import huggingface_hub.constants

    monkeypatch.setattr(clip_tokenizer, "find_bpe_file", lambda: None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(clean_home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (found,) = doctor.check_tokenizer()
    assert found.status == MISSING and found.fix == "HF_HUB_OFFLINE=0 celebbasis download clip-vocab"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    (found,) = doctor.check_tokenizer()
    assert found.status == NOTE and clip_tokenizer.HF_TOKENIZER_REPO in found.found


def test_basis_cache_counts_its_files(clean_home):
    (found,) = doctor.check_basis_cache()
    assert str(clean_home / "cache" / "basis") in found.found and "empty" in found.found
    folder = clean_home / "cache" / "basis"
    folder.mkdir()
    (folder / "basis-0123-abcd-k512.safetensors").write_bytes(b"\0" * (3 * 2**20))
    (found,) = doctor.check_basis_cache()
    assert "1 model(s), 3.0 MB" in found.found


@pytest.mark.parametrize("files, label", [
    ({"webui.py": "", "modules/shared.py": ""}, "AUTOMATIC1111"),
    ({"modules_forge/forge_version.py": 'version = "neo"\n', "modules/shared.py": ""}, "Forge Neo"),
    ({"modules_forge/forge_version.py": "version = '2.0.1v1.10.1'\n"}, "Forge"),
    ({"modules_forge/forge_version.py": 'version = "classic"\n'}, "Forge classic"),
    ({"modules/modeldata.py": "", "modules/shared.py": "", "webui.py": ""}, "SD.Next"),
])
def test_host_from_its_files(clean_home, monkeypatch, files, label):
    root = clean_home / "webui"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    assert doctor.webui_kind(root) == label
    (found,) = doctor.check_host(webui_root=root)
    assert found.found == f"{label} at {root} (--webui-root)"
    monkeypatch.setenv("CELEBBASIS_WEBUI_ROOT", str(root))
    assert doctor.check_host()[0].found == f"{label} at {root} (CELEBBASIS_WEBUI_ROOT)"


def test_no_host(clean_home):
    assert doctor.webui_kind(clean_home) is None
    assert doctor.check_host()[0].found.startswith("no WebUI found")


# ---------------------------------------------------------------- the command


def test_doctor_command_report_and_exit_code(clean_home, standin_dir, monkeypatch, capsys):
    _no_dlib(monkeypatch)
    models = clean_home / "models"
    assert cli.main(["doctor", "--models-dir", str(models), "--json"]) == cli.EXIT_FAILURE  # no face encoder
    findings = json.loads(capsys.readouterr().out)
    assert {"topic", "status", "found", "fix"} <= set(findings[0])
    assert [f["fix"] for f in findings if f["status"] == MISSING] == ["pip install dlib-bin face_recognition_models"]

    _place_buffalo(models, standin_dir)
    assert cli.main(["doctor", "--models-dir", str(models)]) == cli.EXIT_OK
    text = capsys.readouterr().out
    assert f"ok       face encoder insightface: model files in {models}" in text
    assert "fix: pip install dlib-bin" in text and text.rstrip().endswith("ready for `celebbasis tune`")


@pytest.mark.parametrize("module, words", [("torch", ["PyTorch is not installed", "`pip install torch`", "pytorch.org"]),
                                           ("diffusers", ['"diffusers>=0.28"', "celebbasis doctor"])])
def test_cli_says_which_package_is_missing(module, words):
    probe = (f"import sys; sys.modules[{module!r}] = None; from celebbasis_ext.cli import main;"
             "sys.exit(main(['bench', '--arch', 'tiny-sd1', '--steps', '1', '--repeats', '1']))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    for word in words:
        assert word in line


# ---------------------------------------------------------------- downloads with progress


def test_download_face_models_command(clean_home, standin_dir, monkeypatch, capsys):
    data = _zip(standin_dir)
    archive = clean_home / "mirror" / "buffalo_l.zip"
    archive.parent.mkdir()
    archive.write_bytes(data)
    monkeypatch.setenv(model_files.ENV_URL, archive.as_uri())
    monkeypatch.setenv(model_files.ENV_SHA256, _sha(data))
    models = clean_home / "models"
    assert cli.main(["download", "face-models", "--models-dir", str(models)]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert Path(out.strip()) == models / "buffalo_l"
    assert "downloading insightface buffalo_l into" in err and "buffalo_l.zip" in err  # the message and the bar
    assert model_files.find_buffalo_l(models) == models / "buffalo_l"
    assert cli.main(["download", "face-models", "--models-dir", str(models)]) == cli.EXIT_OK
    assert "already there" in capsys.readouterr().err

    monkeypatch.setenv(model_files.ENV_SHA256, "0" * 64)
    assert cli.main(["download", "face-models", "--models-dir", str(clean_home / "other")]) == cli.EXIT_BAD_INPUT
    assert "does not match the expected SHA-256" in capsys.readouterr().err
    assert not (clean_home / "other").exists()


def test_download_progress_reaches_a_callback_and_the_service(clean_home, standin_dir, monkeypatch):
    data = _zip(standin_dir)
    archive = clean_home / "buffalo_l.zip"
    archive.write_bytes(data)
    monkeypatch.setenv(model_files.ENV_URL, archive.as_uri())
    monkeypatch.setenv(model_files.ENV_SHA256, _sha(data))
    seen = []
    encoder = load_face_encoder("insightface", clean_home / "models", allow_download=True, reuse=False,
                                download_progress=lambda received, total: seen.append((received, total)))
    assert encoder.name == "insightface"
    assert seen[0][0] == 0 and seen[-1][0] == len(data)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))

    from celebbasis_ext.service import CelebBasisService

    service = CelebBasisService(lambda: None, clean_home / "out")
    service._download_progress(3 * 2**20, 280 * 2**20)
    assert service.progress()["message"] == "downloading face models: 3 of 280 MB"
