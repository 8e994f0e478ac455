"""The extension inside the stand-in of SD.Next (tests/host_standins/sdnext).

The host parses its command line after the extension's ``preload.py``, loads
``scripts/celebbasis.py`` (extension folder on sys.path only during the
import), registers the callbacks (SD.Next's ``on_ui_tabs`` has no ``name=``),
the settings section and the tab without loading a model; then a tuning
through the Train button's own queued function (SD.Next's
``wrap_gradio_gpu_call``, which begins the job before taking its plain lock),
the file written, the loaded pipeline unchanged, the next prompt encoded with
the new vectors through the pipeline's own embedding database, Interrupt
honoured, and the HTTP API under the queue lock and SD.Next's ``--auth`` users.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from helpers import b64_image, noise_photo
from host_helpers import fast_settings, in_worker, needs_gradio, our_callbacks

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--auth", "alice:pw", "--celebbasis-no-download"]

pytest.importorskip("fastapi")


def script_module(host):
    """SD.Next keeps no table of loaded script modules: our callbacks' globals are the module."""
    [callback] = our_callbacks(host, "ui_tabs")
    return _Globals(callback.callback.__globals__)


class _Globals:
    def __init__(self, namespace):
        self.__dict__.update(namespace)


def button_function(blocks, elem_id):
    """The function gradio calls when the button ``elem_id`` is clicked (SD.Next's wrapper has no __wrapped__)."""
    functions = list(blocks.fns.values()) if isinstance(blocks.fns, dict) else list(blocks.fns)
    for index, block_function in enumerate(functions):
        targets = getattr(block_function, "targets", None)
        if targets is None:  # gradio 3.x (SD.Next pins 3.43): ids and trigger in blocks.dependencies
            dependency = blocks.dependencies[index]
            targets = [(target, dependency["trigger"]) for target in dependency["targets"]]
        for target in targets or []:
            block = blocks.blocks.get(target[0]) if isinstance(target, tuple) else None
            if getattr(block, "elem_id", None) == elem_id and target[1] == "click":
                return block_function.fn
    raise AssertionError(f"no click function for {elem_id}")


def pipeline_state(host):
    """Everything of the loaded pipeline tuning must leave as it was. SD.Next appends a row per loaded
    embedding vector to the text encoders' token tables when it reloads embeddings (its own machinery):
    the base vocabulary's rows are compared instead of the whole tables."""
    from celebbasis_ext.hosts.detect import adapter_for_loaded_model
    from celebbasis_ext.model_guard import state_digest

    pipe = host.shared.sd_model
    adapter = adapter_for_loaded_model(load=False)
    digest = {key: value for key, value in state_digest(adapter.frozen_modules()).items()
              if "token_embedding.weight" not in key}
    tables = [encoder.get_input_embeddings().weight[:tokenizer.vocab_size].detach().clone()
              for encoder, tokenizer in zip(adapter.encoders, adapter.tokenizers)]
    return {"digest": digest, "tables": tables,
            "params": [(id(p), p.is_inference(), p.requires_grad, p.device)
                       for m in adapter.frozen_modules() for p in m.parameters()],
            "hooks": [getattr(c, "_hf_hook", None) for c in (pipe.unet, pipe.text_encoder, pipe.vae)]}


def same_state(after, before):
    assert after["digest"] == before["digest"]
    assert all(torch.equal(a, b) for a, b in zip(after["tables"], before["tables"]))
    assert after["params"] == before["params"] and after["hooks"] == before["hooks"]


def test_loads_registers_and_reads_settings(sdnext, tmp_path):
    from celebbasis_ext.hosts.detect import HostKind, detect_host

    host = sdnext.boot(tmp_path / "sdnext", checkpoint="tiny-sd1", load=False, args=ARGS, extensions=[ROOT])
    assert detect_host().kind == HostKind.SDNEXT
    for category in ("ui_tabs", "ui_settings", "app_started", "script_unloaded"):
        assert len(our_callbacks(host, category)) == 1, category
    assert host.shared.cmd_opts.celebbasis_no_download is True
    module = script_module(host)
    assert module.host.__name__ == "celebbasis_ext.webui.a1111_host"
    assert str(host.root / "extensions" / ROOT.name) not in sys.path  # only during the import
    assert host.modeldata.model_data.sd_model is None  # registering loaded nothing
    service = module.service()
    settings = service.settings
    assert settings.allow_download is False and settings.webui_root == str(host.root)
    assert service.out_dir == (host.root / "models" / "embeddings" / "celebbasis").resolve()


@needs_gradio
def test_settings_section_and_tab_are_built_without_loading_a_model(sdnext, tmp_path):
    host = sdnext.boot(tmp_path / "sdnext", checkpoint="tiny-sd1", load=False, args=ARGS, extensions=[ROOT])
    module = script_module(host)
    host.modules.script_callbacks.ui_settings_callback()
    ours = {key: info for key, info in host.shared.opts.data_labels.items() if key.startswith("celebbasis_")}
    assert set(ours) == set(module.host.OPTIONS)
    assert all(info.section == ("celebbasis", "CelebBasis") for info in ours.values())
    [(_, title, elem_id)] = host.modules.script_callbacks.ui_tabs_callback()
    assert (title, elem_id) == ("CelebBasis", "celebbasis")
    assert host.modeldata.model_data.sd_model is None  # building the tab loaded nothing


@needs_gradio
@pytest.mark.parametrize("checkpoint", ["tiny-sd1", "tiny-sdxl"])
def test_tab_trains_through_the_host_queue_and_the_next_prompt_uses_it(sdnext, tmp_path, checkpoint):
    from celebbasis_ext.hosts.detect import adapter_for_loaded_model
    from celebbasis_ext.identity import EXPORT_KEYS, load_identity

    host = sdnext.boot(tmp_path / "sdnext", checkpoint=checkpoint, args=ARGS, extensions=[ROOT])
    service = script_module(host).service()
    fast_settings(service, tmp_path)
    state, lock = host.shared.state, host.modules.call_queue.queue_lock
    [(blocks, _, _)] = host.modules.script_callbacks.ui_tabs_callback()
    train = button_function(blocks, "celebbasis_train")

    seen = []
    original_hook = service.host_progress

    def watch(update):
        original_hook(update)
        seen.append((state.sampling_step, state.sampling_steps, state.job, lock.locked(),
                     host.modules.progress.api_progress(host.modules.progress.ProgressRequest(
                         id_task="task(celebbasis-1)"))["progress"]))

    service.host_progress = watch
    photo = tmp_path / "photo.png"
    noise_photo(size=96).save(photo)
    before = pipeline_state(host)
    token, file, _, _, _, note, status = in_worker(train, "task(celebbasis-1)", [str(photo)], "zed_host", "Fast", 2,
                                                   0.01, 23, "auto", "none", "auto (largest face)", False)
    assert token == "zed_host", status
    assert "runs on the CPU" in note  # SD.Next's devices.device
    assert "Done" in status and "Time:" in status  # SD.Next's wrapper appended its timing
    path = Path(file)
    assert path.is_file() and path.parent == (host.root / "models" / "embeddings" / "celebbasis").resolve()
    assert [s[:2] for s in seen] == [(0, 2), (1, 2), (2, 2)] and all(s[2] == "train" and s[3] for s in seen)
    assert [s[4] for s in seen][1:] == [0.5, 1.0]  # SD.Next's progress bar
    same_state(pipeline_state(host), before)
    assert host.modules.progress.current_task is None and not lock.locked()

    # the very next prompt uses the new vectors, through SD.Next's own embedding database
    pipe = host.shared.sd_model
    assert "zed_host" in pipe.embedding_db.word_embeddings
    identity = load_identity(path)
    embedding = torch.cat([identity.vectors[key] for key in EXPORT_KEYS[identity.family]], dim=-1)
    prompt_embeds, pooled = host.prompt_parser_diffusers.encode_prompt("a photo of zed_host")
    assert pipe.embedding_db.embeddings_used == ["zed_host"]
    with torch.no_grad():
        ours = adapter_for_loaded_model(load=False).encode_prompts(["a photo of {}"], embedding)
    torch.testing.assert_close(prompt_embeds, ours["context"], atol=1e-5, rtol=1e-4)
    assert (pooled is None) == (ours["pooled"] is None)  # SDXL has one, SD1 none
    if pooled is not None:
        torch.testing.assert_close(pooled, ours["pooled"], atol=1e-5, rtol=1e-4)

    # Interrupt during a run: nothing written, the pipeline as it was
    def interrupt(update):
        original_hook(update)
        state.interrupt()

    service.host_progress = interrupt
    before = pipeline_state(host)
    *_, status = in_worker(train, "task(celebbasis-2)", [str(photo)], "zed_stopped", "Fast", 50, 0.01, 23, "auto",
                           "none", "auto (largest face)", False)
    assert "Interrupted" in status and not (path.parent / "zed_stopped.safetensors").exists()
    same_state(pipeline_state(host), before)


def test_api_under_queue_lock_and_sdnext_auth(sdnext, tmp_path):
    from fastapi.testclient import TestClient

    host = sdnext.boot(tmp_path / "sdnext", checkpoint="tiny-sd1", args=ARGS, extensions=[ROOT])
    service = script_module(host).service()
    fast_settings(service, tmp_path)
    client = TestClient(host.start_app())
    assert client.get("/celebbasis/v1/identities").status_code == 401  # SD.Next's --auth users protect it too
    assert client.get("/celebbasis/v1/identities", auth=("alice", "nope")).status_code == 401
    assert client.post("/internal/progress", json={}).status_code == 401

    held = []
    original_hook = service.host_progress
    state = host.shared.state
    service.host_progress = lambda update: (original_hook(update),
                                            held.append((host.modules.call_queue.queue_lock.locked(), state.job)))
    before = pipeline_state(host)
    unknown, _ = host.prompt_parser_diffusers.encode_prompt("a photo of zed_api")  # the name as plain words
    body = {"images": [b64_image()], "name": "zed_api", "steps": 2, "face_encoder": "none"}
    response = client.post("/celebbasis/v1/tune", json=body, auth=("alice", "pw"))
    service.host_progress = original_hook
    assert response.status_code == 200, response.text
    assert held == [(True, "celebbasis")] * 3 and not host.modules.call_queue.queue_lock.locked()
    assert state.job == "" and state.interrupted is False
    same_state(pipeline_state(host), before)
    assert "zed_api" in host.shared.sd_model.embedding_db.word_embeddings
    host.prompt_parser_diffusers.encode_prompt("a photo of zed_api")
    assert host.shared.sd_model.embedding_db.embeddings_used == ["zed_api"]
    listed = client.get("/celebbasis/v1/identities", auth=("alice", "pw")).json()["identities"]
    assert [item["name"] for item in listed] == ["zed_api"]
    assert client.delete("/celebbasis/v1/identities/zed_api", auth=("alice", "pw")).status_code == 200
    assert "zed_api" not in host.shared.sd_model.embedding_db.word_embeddings
    # SD.Next finds embeddings by the tokenizer's added tokens, which its reload never removes: ours are gone too
    deleted, _ = host.prompt_parser_diffusers.encode_prompt("a photo of zed_api")
    assert host.shared.sd_model.embedding_db.embeddings_used == []
    torch.testing.assert_close(deleted, unknown)
    host.modules.script_callbacks.script_unloaded_callback()


def test_names_of_embeddings_loaded_from_elsewhere_are_refused(sdnext, tmp_path):
    """SD.Next's sd_hijack.model_hijack is a function: the loaded pipeline's embedding_db is read."""
    from safetensors.torch import save_file

    from celebbasis_ext.hosts.reload import reload_embeddings

    host = sdnext.boot(tmp_path / "sdnext", checkpoint="tiny-sd1", args=ARGS, extensions=[ROOT])
    service = script_module(host).service()
    assert service.check_name("zed_elsewhere").ok
    elsewhere = Path(host.shared.opts.embeddings_dir) / "zed_elsewhere.safetensors"  # not in our subfolder
    save_file({"emb_params": torch.randn(1, 32)}, str(elsewhere))
    reload_embeddings()
    assert "zed_elsewhere" in host.shared.sd_model.embedding_db.word_embeddings
    check = service.check_name("zed_elsewhere")
    assert check.level == "error" and "already loaded from another folder" in check.message
