"""The stand-in host behaves like A1111 1.10.1 where extensions can see it (embedding database,
call queue and progress, callbacks and script loading, API auth)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

STANDIN = Path(__file__).resolve().parent
if str(STANDIN) not in sys.path:
    sys.path.insert(0, str(STANDIN))

from standin import boot  # noqa: E402


def _save(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def test_embedding_database_branches_shapes_and_reload_rules(tmp_path):
    host = boot(tmp_path, model="sdxl")
    db = host.modules.sd_hijack.model_hijack.embedding_db
    assert db.expected_shape == 80  # CLIP-L 32 + bigG 48 (768 + 1280 in the real SDXL)
    folder = Path(host.shared.cmd_opts.embeddings_dir)
    _save(folder / "deep" / "er" / "both.safetensors", {"clip_l": torch.zeros(2, 32), "clip_g": torch.zeros(2, 48)})
    _save(folder / "single.safetensors", {"emb_params": torch.zeros(2, 80)})
    _save(folder / "narrow.safetensors", {"emb_params": torch.zeros(2, 32)})
    _save(folder / "two_keys.safetensors", {"a": torch.zeros(1, 80), "b": torch.zeros(1, 80)})
    (folder / "empty.safetensors").write_bytes(b"")
    db.load_textual_inversion_embeddings(force_reload=True)
    assert sorted(db.word_embeddings) == ["both", "single"]
    assert db.word_embeddings["both"].vectors == 2 and isinstance(db.word_embeddings["both"].vec, dict)
    assert list(db.skipped_embeddings) == ["narrow"]
    assert len(db.word_embeddings["both"].shorthash) == 12

    # without force: only a newer mtime of the registered folder itself triggers a reload
    loads = db.load_count
    _save(folder / "deep" / "er" / "late.safetensors", {"emb_params": torch.zeros(1, 80)})
    db.load_textual_inversion_embeddings()
    assert db.load_count == loads and "late" not in db.word_embeddings
    os.utime(folder, (time.time() + 5, time.time() + 5))
    db.load_textual_inversion_embeddings()
    assert "late" in db.word_embeddings


def test_wrap_gradio_gpu_call_queue_progress_and_errors(tmp_path):
    host = boot(tmp_path, model=None)
    call_queue, progress, state = host.modules.call_queue, host.modules.progress, host.shared.state
    seen = {}

    def work(id_task, value):
        seen["locked"] = call_queue.queue_lock.locked()
        seen["current"] = progress.current_task
        state.job_count, state.job_no, state.textinfo = 4, 1, "step 1/4"
        seen["progress"] = progress.progressapi(progress.ProgressRequest(id_task=id_task))
        return [value, "done"]

    wrapped = call_queue.wrap_gradio_gpu_call(work, extra_outputs=[None, ""])
    result = wrapped("task(abc)", 7)
    assert seen["locked"] and seen["current"] == "task(abc)"
    assert seen["progress"].active and seen["progress"].progress == 0.25 and seen["progress"].textinfo == "step 1/4"
    assert isinstance(result, tuple) and result[0] == 7 and result[1].startswith("done<div class='performance'>")
    assert "task(abc)" in progress.finished_tasks and progress.current_task is None

    failing = call_queue.wrap_gradio_gpu_call(lambda id_task: 1 / 0, extra_outputs=[None, ""])
    result = failing("task(def)")
    assert result[:2] == (None, "") and "ZeroDivisionError" in result[2] and not call_queue.queue_lock.locked()


def test_extension_scripts_load_with_basedir_and_callbacks(tmp_path):
    ext = tmp_path / "sources" / "my-ext"
    (ext / "scripts").mkdir(parents=True)
    (ext / "preload.py").write_text("def preload(parser):\n    parser.add_argument('--my-flag', action='store_true')\n")
    (ext / "scripts" / "wiring.py").write_text(textwrap.dedent("""
        from modules import script_callbacks, scripts, shared
        BASEDIR = scripts.basedir()
        def tabs():
            return [("blocks", "My tab", "my_tab")]
        def settings():
            shared.opts.add_option("my_key", shared.OptionInfo(3, "My key", section=("my", "My")))
        script_callbacks.on_ui_tabs(tabs)
        script_callbacks.on_ui_settings(settings)
        script_callbacks.on_app_started(lambda demo, app: app.add_api_route("/my/v1/ping", lambda: {"ok": True}))
    """))
    host = boot(tmp_path / "webui", model=None, args=["--no-half", "--my-flag"], extensions=[ext])
    callbacks = host.modules.script_callbacks
    assert host.shared.cmd_opts.my_flag is True
    module = next(iter(host.modules.scripts.loaded_modules.values()))
    assert Path(module.BASEDIR).name == "my-ext" and host.modules.scripts.basedir() != module.BASEDIR
    assert callbacks.ui_tabs_callback() == [("blocks", "My tab", "my_tab")]
    assert callbacks.callback_map["callbacks_ui_tabs"][0].name == "my-ext/wiring.py/ui_tabs"
    callbacks.ui_settings_callback()
    assert host.shared.opts.my_key == 3 and host.shared.opts.data_labels["my_key"].section == ("my", "My")


@pytest.mark.parametrize("auth", [None, "user:secret"])
def test_api_auth_applies_to_sdapi_routes_only(tmp_path, auth):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    args = ["--no-half", "--use-cpu", "all", "--api"] + (["--api-auth", auth] if auth else [])
    host = boot(tmp_path, model="sd1", args=args)
    app = host.start_app()
    app.add_api_route("/ext/v1/ping", lambda: {"ok": True})
    client = TestClient(app)
    assert client.get("/ext/v1/ping").status_code == 200  # extension routes are not protected by the host
    response = client.get("/sdapi/v1/embeddings")
    if auth:
        # the host's exception handler rebuilds the response: status and detail stay, headers go
        assert response.status_code == 401 and response.json()["detail"] == "Not authenticated"
        wrong = client.get("/sdapi/v1/embeddings", auth=("user", "wrong"))
        assert wrong.status_code == 401 and wrong.json()["error"] == "HTTPException"
        assert wrong.json()["detail"] == "Incorrect username or password"
        response = client.get("/sdapi/v1/embeddings", auth=("user", "secret"))
    assert response.status_code == 200 and set(response.json()) == {"loaded", "skipped"}
    progress = client.post("/internal/progress", json={"id_task": "task(none)"}).json()
    assert progress["active"] is False and progress["textinfo"] == "Waiting..."
