"""The extension inside a stand-in of AUTOMATIC1111 1.10.1 (tests/host_standins/a1111).

The host loads ``preload.py`` and ``scripts/celebbasis.py`` the way A1111 does
(extension folder first on sys.path during the import), then: callbacks
registered, settings section, the tab built (without loading a model), a
tuning through the Train button's own queued function (wrap_gradio_gpu_call)
with the host's progress fields, the file written and the embeddings
reloaded, the model unchanged, the host's Interrupt honoured, and the HTTP
API under the host's queue lock and --api-auth.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import b64_image, noise_photo
from host_helpers import fast_settings, needs_gradio, our_callbacks, queued_function

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "host_standins" / "a1111"

if not (STANDIN / "standin.py").is_file():  # pragma: no cover - the stand-in ships with the tests
    pytest.skip("the A1111 stand-in is not available", allow_module_level=True)
pytest.importorskip("fastapi")

if str(STANDIN) not in sys.path:
    sys.path.insert(0, str(STANDIN))
from standin import boot  # noqa: E402

ARGS = ["--no-half", "--use-cpu", "all", "--precision", "full", "--disable-nan-check"]
OURS = "celebbasis.py"


def script_module(host):
    return next(module for path, module in host.modules.scripts.loaded_modules.items() if Path(path).name == OURS)


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    root = tmp_path_factory.mktemp("webui")
    host = boot(root, args=ARGS + ["--api", "--api-auth", "alice:pw", "--celebbasis-no-download"], model="sd1",
                extensions=[ROOT])
    return host, root


def test_loads_registers_and_reads_settings(booted):
    host, _ = booted
    for category in ("ui_tabs", "ui_settings", "app_started", "script_unloaded"):
        assert len(our_callbacks(host, category)) == 1, category
    assert host.shared.cmd_opts.celebbasis_no_download is True
    assert host.shared.cmd_opts.celebbasis_models_dir is None
    module = script_module(host)
    assert module.host.__name__ == "celebbasis_ext.webui.a1111_host"
    assert Path(sys.modules["celebbasis_ext"].__file__).resolve().parent == ROOT / "celebbasis_ext"
    assert not any(name == "ldm" or name.startswith(("ldm.", "sgm")) for name in sys.modules)

    settings = module.service().settings
    assert settings.allow_download is False  # --celebbasis-no-download wins over the setting
    host.shared.opts.data["celebbasis_allow_download"] = True
    assert module.service().settings.allow_download is False
    host.shared.opts.data["celebbasis_face_encoder"] = "dlib"
    assert module.service().settings.face_encoder == "dlib"
    host.shared.opts.data["celebbasis_face_encoder"] = "auto"
    assert module.service().settings.tune_defaults == {}  # the model's own training size
    host.shared.opts.data["celebbasis_train_resolution"] = 384
    assert module.service().build_options("Fast", {}, "none")[0].resolution == 384  # read live, used by the tab
    host.shared.opts.data["celebbasis_train_resolution"] = 0
    assert module.service().out_dir == Path(host.shared.cmd_opts.embeddings_dir).resolve() / "celebbasis"
    host.shared.opts.data["celebbasis_subfolder"] = "../../elsewhere"
    assert module.service().out_dir == Path(host.shared.cmd_opts.embeddings_dir).resolve() / "celebbasis"
    host.shared.opts.data["celebbasis_subfolder"] = "celebbasis"


@needs_gradio  # the settings' components are gradio classes
def test_settings_section_lists_every_option(booted):
    host, _ = booted
    module = script_module(host)
    host.modules.script_callbacks.ui_settings_callback()
    ours = {key: info for key, info in host.shared.opts.data_labels.items() if key.startswith("celebbasis_")}
    assert set(ours) == set(module.host.OPTIONS)
    assert all(info.section == ("celebbasis", "CelebBasis") for info in ours.values())


@needs_gradio
def test_tab_trains_through_the_host_queue_reloads_and_leaves_the_model(booted, tmp_path):
    from celebbasis_ext.model_guard import state_digest

    host, _ = booted
    module = script_module(host)
    service = module.service()
    fast_settings(service, tmp_path)
    shared, state = host.shared, host.shared.state
    [(blocks, title, elem_id)] = host.modules.script_callbacks.ui_tabs_callback()
    assert (title, elem_id) == ("CelebBasis", "celebbasis")
    train = queued_function(blocks, "train")
    callbacks = blocks.celebbasis_callbacks
    # --use-cpu all: said next to the Train button before anything runs (nothing measured yet)
    [note_box] = [block for block in blocks.blocks.values() if block.elem_id == "celebbasis_train_note"]
    assert "runs on the CPU" in note_box.value and "after the first steps" in note_box.value

    seen = []
    original_hook = service.host_progress

    def watch(update):
        original_hook(update)
        seen.append((state.sampling_step, state.sampling_steps, state.job_count, state.textinfo,
                     host.modules.call_queue.queue_lock.locked()))

    service.host_progress = watch
    photo = tmp_path / "photo.png"
    noise_photo(size=96).save(photo)
    model = shared.sd_model
    before = state_digest([model])
    db = host.modules.sd_hijack.model_hijack.embedding_db
    loads = db.load_count
    outputs = train("task(celebbasis-1)", [str(photo)], "zed_host", "Fast", 2, 0.01, 23, "auto", "none",
                    "auto (largest face)", False)
    token, file, _, _, hint, note, status = outputs
    assert "exists" in hint
    assert token == "zed_host", status
    path = Path(file)
    assert path.is_file() and path.parent == Path(shared.cmd_opts.embeddings_dir).resolve() / "celebbasis"
    assert "Done" in status and "Time taken" in status  # the host appended its timing to our HTML
    assert [s[0] for s in seen] == [0, 1, 2] and all(s[1] == 2 and s[2] == 1 and s[4] for s in seen)
    assert seen[0][3].startswith("CelebBasis: preparing")  # shown before the face, basis and views are ready
    assert seen[-1][3].startswith("CelebBasis: step 2/2, loss ")
    assert db.load_count > loads and "zed_host" in db.word_embeddings  # usable in the next prompt
    assert db.word_embeddings["zed_host"].vectors == 2
    assert state_digest([model]) == before
    assert host.modules.progress.current_task is None and state.job_count == 0

    # the expected time, measured on this run, now stands next to the Train button
    import json

    timing = json.loads((path.parent / "celebbasis-timing.json").read_text())["cpu"]
    assert timing["name"] == "zed_host" and timing["steps"] == 2 and timing["step_seconds"] > 0
    expected = timing["setup_seconds"] + 200 * timing["step_seconds"]
    assert service.expected_time(200)["seconds"] == pytest.approx(expected)
    assert "runs on the CPU" in note and "Expected time for 2 steps" in note
    assert "Expected time for 200 steps" in callbacks.train_note(200)

    # after a page reload Token and File are empty: the identities table (a click) or the Identity list fills them
    from celebbasis_ext.webui.tab import identity_rows

    choices, page_note = callbacks.page_load(200)
    assert "zed_host" in choices["choices"] and "Expected time for 200 steps" in page_note
    chosen, token_box, file_box = callbacks.select_row(identity_rows(service), [0, 4])
    assert (chosen["value"], token_box, file_box) == ("zed_host", "zed_host", str(path))
    assert callbacks.choose_identity("zed_host") == ("zed_host", str(path))
    assert callbacks.choose_identity("nobody") == ({"__type__": "update"}, {"__type__": "update"})

    # the tab's Interrupt with nothing of ours running leaves the host's generation alone
    callbacks.interrupt()
    assert state.interrupted is False

    # the host's Interrupt button during a run: nothing written, the model as it was
    def interrupt(update):
        original_hook(update)
        state.interrupt()

    service.host_progress = interrupt
    *_, status = train("task(celebbasis-2)", [str(photo)], "zed_stopped", "Fast", 50, 0.01, 23,
                       "auto", "none", "auto (largest face)", False)
    assert "Interrupted" in status and not (path.parent / "zed_stopped.safetensors").exists()
    assert state.interrupted is False  # the host resets it after the call
    assert state_digest([model]) == before

    # a bad request is a message in the tab, not a traceback
    service.host_progress = original_hook
    *_, status = train("task(celebbasis-3)", [str(photo)], "zed_host", "Fast", 2, 0.01, 23, "auto", "none",
                       "auto (largest face)", False)
    assert "already exists" in status and "Traceback" not in status

    assert "exists" in callbacks.check_name("zed_host")
    gallery, choice, note, face_map = callbacks.detect([str(photo)], "none")
    assert gallery == [] and face_map == [] and "centre" in note and choice["value"] == "auto (largest face)"
    assert callbacks.select_face([0, 1, 0], 1)["value"] == "face 2"  # counted from 1 for people
    assert callbacks.preset_steps("Best")["value"] == 800
    assert callbacks.encoder_mode("none")["value"] == "direct"
    assert "value" not in callbacks.encoder_mode("dlib")
    table, choices, note = callbacks.delete("zed_host")
    assert not path.exists() and "zed_host" not in db.word_embeddings and "Deleted" in note


def test_api_under_queue_lock_and_api_auth(booted, tmp_path):

    from fastapi.testclient import TestClient

    host, _ = booted
    module = script_module(host)
    service = module.service()
    fast_settings(service, tmp_path)
    app = host.start_app()
    client = TestClient(app)
    assert client.get("/celebbasis/v1/identities").status_code == 401
    assert client.get("/celebbasis/v1/identities", auth=("alice", "nope")).status_code == 401

    held = []
    original_hook = service.host_progress
    service.host_progress = lambda update: (original_hook(update),
                                            held.append(host.modules.call_queue.queue_lock.locked()))
    body = {"images": [b64_image()], "name": "zed_api", "steps": 2, "face_encoder": "none"}
    response = client.post("/celebbasis/v1/tune", json=body, auth=("alice", "pw"))
    service.host_progress = original_hook
    assert response.status_code == 200, response.text
    assert held == [True, True, True] and not host.modules.call_queue.queue_lock.locked()  # steps 0, 1, 2
    db = host.modules.sd_hijack.model_hijack.embedding_db
    assert "zed_api" in db.word_embeddings
    listed = client.get("/celebbasis/v1/identities", auth=("alice", "pw")).json()["identities"]
    names = [item["name"] for item in listed]
    assert names == ["zed_api"]
    response = client.post("/celebbasis/v1/tune", json={**body, "name": "../x"}, auth=("alice", "pw"))
    assert response.status_code == 400 and "\n" not in response.json()["detail"]
    assert client.delete("/celebbasis/v1/identities/zed_api", auth=("alice", "pw")).status_code == 200
    assert "zed_api" not in db.word_embeddings

    # SDXL: both text encoders' vectors, loaded by the host's embedding database
    from safetensors import safe_open

    host.load_model("sdxl")
    response = client.post("/celebbasis/v1/tune", json={**body, "name": "zed_xl"}, auth=("alice", "pw"))
    assert response.status_code == 200, response.text
    assert response.json()["family"] == "sdxl"
    with safe_open(response.json()["file"], framework="pt") as handle:
        assert {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()} == \
            {"clip_l": [2, 32], "clip_g": [2, 48]}
    assert db.word_embeddings["zed_xl"].vectors == 2

    host.modules.script_callbacks.script_unloaded_callback()  # cancels nothing running; must not fail


@needs_gradio
def test_loads_without_a_model_and_without_api(tmp_path):
    host = boot(tmp_path / "bare", args=ARGS, model=None, extensions=[ROOT])
    sd_models = host.modules.sd_models
    host.modules.script_callbacks.ui_settings_callback()
    [(blocks, title, _)] = host.modules.script_callbacks.ui_tabs_callback()
    assert title == "CelebBasis" and sd_models.model_data.sd_model is None  # building the tab loads nothing
    app = host.start_app()
    assert not any(str(getattr(route, "path", "")).startswith("/celebbasis/") for route in app.routes)
    module = script_module(host)
    assert module.service().check_name("zed_free").ok
    assert module.service().identities() == []


def test_install_is_quiet_when_complete_and_never_pulls_two_onnxruntimes(monkeypatch):
    import importlib
    import importlib.metadata
    import runpy

    launch = importlib.import_module("launch")  # the stand-in's launch.py (records pip calls)
    monkeypatch.setattr(launch, "pip_calls", [])
    installed = {name for name in ("onnxruntime", "dlib", "face_recognition_models")
                 if launch.is_installed(name)}
    if len(installed) == 3:
        runpy.run_path(str(ROOT / "install.py"), run_name="__main__")
        assert launch.pip_calls == []  # second start: no pip at all

    missing = {"dlib", "face_recognition_models"}
    real_is_installed, real_distributions = launch.is_installed, importlib.metadata.distributions
    real_version = importlib.metadata.version

    def version(name):
        if name in missing:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(launch, "is_installed", lambda name: name not in missing and real_is_installed(name))
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: (
        dist for dist in real_distributions()
        if not (dist.metadata["Name"] or "").lower().startswith(("onnxruntime", "insightface"))))
    launch.pip_calls.clear()
    runpy.run_path(str(ROOT / "install.py"), run_name="__main__")
    calls = launch.pip_calls
    assert len(calls) == 3 and all(" -c " in call and "--prefer-binary" in call for call in calls)
    joined = "\n".join(calls)
    assert "install onnxruntime -c" in joined and "onnxruntime-gpu" not in joined  # CPU torch here
    assert "insightface" not in joined  # its ONNX models run on onnxruntime; the package is not needed
    assert "install dlib-bin" in joined and 'install "face_recognition_models>=0.3.0"' in joined


def test_install_runs_pip_itself_when_the_host_skips_onnxruntime(monkeypatch):
    """SD.Next's run_pip returns without installing anything named onnxruntime*."""
    import importlib
    import importlib.metadata
    import runpy
    import subprocess

    launch = importlib.import_module("launch")
    monkeypatch.setattr(launch, "pip_calls", [])
    real_distributions = importlib.metadata.distributions
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: (
        dist for dist in real_distributions()
        if not (dist.metadata["Name"] or "").lower().startswith("onnxruntime")))
    direct = []

    class Done:
        returncode, stderr = 0, ""

    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: direct.append(command) or Done())
    runpy.run_path(str(ROOT / "install.py"), run_name="__main__")
    assert any("install onnxruntime" in call for call in launch.pip_calls)
    assert len(direct) == 1 and direct[0][1:5] == ["-m", "pip", "install", "onnxruntime"]


@pytest.mark.parametrize("available, cuda, build", [
    (True, "12.8", "onnxruntime-gpu"), (True, "13.0", "onnxruntime"), (True, "11.8", "onnxruntime"),
    (False, "12.8", "onnxruntime"), (True, None, "onnxruntime"),
])
def test_install_picks_the_runtime_that_matches_torchs_cuda(monkeypatch, available, cuda, build):
    """PyPI's onnxruntime-gpu is built for CUDA 12: Forge Neo's CUDA-13 torch gets the CPU runtime."""
    import importlib
    import importlib.metadata
    import runpy

    import torch

    launch = importlib.import_module("launch")
    monkeypatch.setattr(launch, "pip_calls", [])
    monkeypatch.setattr(launch, "is_installed", lambda name: True)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.9")
    real_distributions = importlib.metadata.distributions
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: (
        dist for dist in real_distributions()
        if not (dist.metadata["Name"] or "").lower().startswith("onnxruntime")))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    namespace = runpy.run_path(str(ROOT / "install.py"))
    assert namespace["plan"]() == [(f"install {build}", f"{build} for CelebBasis")]
