"""The extension inside the stand-in of Forge main and Forge Neo (tests/host_standins/forge).

The host parses its command line after the extension's ``preload.py``, loads
``scripts/celebbasis.py`` the way Forge does (every extension folder left on
sys.path), registers the callbacks and the settings section, builds the tab
without loading a model, and then: a tuning through the Train button's own
queued function (Forge's ``wrap_gradio_gpu_call``) called from a worker
thread, as gradio calls it, while the host's main thread runs its task loop;
the file is written, the loaded engine is exactly as before, the very next
Generate (txt2img handed to the main thread, under inference mode) uses the
new vectors through the engine's own embedding database; Interrupt leaves
nothing; the HTTP API under the host's queue lock and --api-auth.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch

from helpers import b64_image, noise_photo
from host_helpers import (fast_settings, in_worker, needs_gradio, our_callbacks,
                          queued_function)

ROOT = Path(__file__).resolve().parents[1]
OURS = "celebbasis.py"
ARGS = ["--api", "--api-auth", "alice:pw", "--celebbasis-no-download"]

pytest.importorskip("fastapi")


def script_module(host):
    return next(module for path, module in host.modules.scripts.loaded_modules.items() if Path(path).name == OURS)


def snapshot(host):
    from celebbasis_ext.hosts.detect import adapter_for_loaded_model
    from test_forge_adapter import _snapshot

    return _snapshot(adapter_for_loaded_model(load=False), host)


def generate(host, prompt, seed=5):
    """The Generate button: wrap_gradio_gpu_call(txt2img) from a worker thread, work on the main thread."""
    call_queue = host.modules.call_queue
    gpu_call = call_queue.wrap_gradio_gpu_call(host.modules.txt2img.txt2img, extra_outputs=[None, "", ""])
    images, info, _, html = in_worker(gpu_call, "task(txt2img-1)", None, prompt, seed, 2, 64, 64)
    assert "error" not in html, html
    return images, info


@pytest.mark.parametrize("flavor", ["neo", "main"])
def test_loads_registers_and_reads_settings(forge, tmp_path, flavor):
    from celebbasis_ext.hosts.detect import HostKind, detect_host

    host = forge.boot(tmp_path / "webui", flavor=flavor, kind="sd15", load=False, args=ARGS, extensions=[ROOT])
    assert detect_host().kind == (HostKind.FORGE_NEO if flavor == "neo" else HostKind.FORGE)
    for category in ("ui_tabs", "ui_settings", "app_started", "script_unloaded"):
        assert len(our_callbacks(host, category)) == 1, category
    assert host.shared.cmd_opts.celebbasis_no_download is True
    module = script_module(host)
    assert module.host.__name__ == "celebbasis_ext.webui.a1111_host"
    assert Path(sys.modules["celebbasis_ext"].__file__).resolve().parent == ROOT / "celebbasis_ext"
    assert str(host.root / "extensions" / ROOT.name) in sys.path  # Forge leaves extension folders on sys.path
    assert not any(name == "ldm" or name.startswith(("ldm.", "sgm", "ldm_patched")) for name in sys.modules)
    if flavor == "neo":
        with pytest.raises(ImportError):
            import modules.sd_hijack  # noqa: F401 - Neo has none
    assert type(host.shared.sd_model).__name__ == "FakeInitialModel"  # registering loaded nothing

    service = module.service()
    assert service.settings.allow_download is False
    assert service.out_dir == Path(host.shared.cmd_opts.embeddings_dir).resolve() / "celebbasis"
    expected = "embeddings" if flavor == "main" else "models/embeddings"
    assert Path(host.shared.cmd_opts.embeddings_dir) == host.root / expected
    assert service.check_name("zed_free").ok


@needs_gradio
@pytest.mark.parametrize("flavor", ["neo", "main"])
def test_settings_section_and_tab_are_built_without_loading_a_model(forge, tmp_path, flavor):
    host = forge.boot(tmp_path / "webui", flavor=flavor, kind="sd15", load=False, args=ARGS, extensions=[ROOT])
    module = script_module(host)
    host.modules.script_callbacks.ui_settings_callback()
    ours = {key: info for key, info in host.shared.opts.data_labels.items() if key.startswith("celebbasis_")}
    assert set(ours) == set(module.host.OPTIONS)
    assert all(info.section == ("celebbasis", "CelebBasis") for info in ours.values())
    [(_, title, elem_id)] = host.modules.script_callbacks.ui_tabs_callback()
    assert (title, elem_id) == ("CelebBasis", "celebbasis")
    assert type(host.shared.sd_model).__name__ == "FakeInitialModel"  # building the tab loaded nothing


@needs_gradio
@pytest.mark.parametrize("flavor, kind", [("neo", "sd15"), ("main", "sdxl"), ("main", "sd20")])
def test_tab_trains_in_a_worker_thread_and_the_next_generate_uses_it(forge, tmp_path, flavor, kind):
    host = forge.boot(tmp_path / "webui", flavor=flavor, kind=kind, args=ARGS, extensions=[ROOT])
    module = script_module(host)
    service = module.service()
    fast_settings(service, tmp_path)
    state, main_thread = host.shared.state, host.modules.main_thread
    [(blocks, _, _)] = host.modules.script_callbacks.ui_tabs_callback()
    train = queued_function(blocks, "train")

    seen = []
    original_hook = service.host_progress

    def watch(update):
        original_hook(update)
        seen.append((state.sampling_step, state.sampling_steps, state.job_count,
                     host.modules.call_queue.queue_lock.locked(), threading.current_thread().name,
                     torch.is_inference_mode_enabled()))

    service.host_progress = watch
    photo = tmp_path / "photo.png"
    noise_photo(size=96).save(photo)
    reference, _ = generate(host, "a photo of a cat")
    before = snapshot(host)
    outputs = in_worker(train, "task(celebbasis-1)", [str(photo)], "zed_host", "Fast", 2, 0.01, 23, "auto", "none",
                        "auto (largest face)", False)
    token, file, _, _, _, note, status = outputs
    assert token == "zed_host", status
    assert "runs on the CPU" in note and "Expected time for 2 steps" in note  # measured on this run
    assert "Done" in status and "Time taken" in status  # Forge's wrapper appended its timing
    path = Path(file)
    assert path.parent == Path(host.shared.cmd_opts.embeddings_dir).resolve() / "celebbasis" and path.is_file()
    assert [s[0] for s in seen] == [0, 1, 2] and all(s[1] == 2 and s[2] == 1 and s[3] for s in seen)
    assert {s[4] for s in seen} == {"gradio-worker"} and main_thread.loop_thread.name == "forge-main-thread"
    assert not any(s[5] for s in seen)
    assert snapshot(host) == before  # values, flags, identity, inference flags, attention, infotext
    assert host.modules.progress.current_task is None and state.job_count == 0

    # the very next Generate (on the main thread, inference mode) uses the new vectors
    images, info = generate(host, "a photo of zed_host")
    assert "TI: zed_host" in info and images[0].size == (64, 64)
    again, _ = generate(host, "a photo of a cat")
    assert [a.tobytes() for a in again] == [r.tobytes() for r in reference]  # the model generates as before
    engines = ["text_processing_engine_l", "text_processing_engine_g"] if kind == "sdxl" else ["text_processing_engine"]
    sd_model = host.shared.sd_model
    for engine in engines:
        assert "zed_host" in getattr(sd_model, engine).embeddings.word_embeddings
    cond, _ = host.processing.txt2img_conditioning(["a photo of zed_host"])
    from celebbasis_ext.hosts.detect import adapter_for_loaded_model
    from celebbasis_ext.identity import EXPORT_KEYS, load_identity
    from test_forge_adapter import _assert_host_uses

    identity = load_identity(path)
    saved = torch.cat([identity.vectors[key] for key in EXPORT_KEYS[identity.family]], dim=-1)  # as trained
    _assert_host_uses(adapter_for_loaded_model(load=False), cond, saved)

    # the host's Interrupt during a run: nothing written, the engine as it was
    def interrupt(update):
        original_hook(update)
        state.interrupt()

    service.host_progress = interrupt
    before = snapshot(host)  # the generations above left the host's own infotext side channel set
    *_, status = in_worker(train, "task(celebbasis-2)", [str(photo)], "zed_stopped", "Fast", 50, 0.01, 23, "auto",
                           "none", "auto (largest face)", False)
    assert "Interrupted" in status and not (path.parent / "zed_stopped.safetensors").exists()
    assert state.interrupted is False and snapshot(host) == before

    # a preview through the host's processing (a generation with the token), at the training size (64 px here,
    # recorded in the file), one image per call with the host's bar counting images and steps
    service.host_progress = original_hook
    host.shared.opts.data["celebbasis_preview_steps"] = 2
    preview = queued_function(blocks, "preview")
    asked, process_images = [], host.processing.process_images

    def watched(p):
        asked.append((p.width, p.height, p.steps, list(p.prompt), state.job_count, state.job_no, state.textinfo,
                      host.modules.progress.current_task))
        processed = process_images(p)
        asked[-1] += ((state.job_no, state.sampling_steps),)  # the host's nextjob() moved the bar on
        return processed

    host.processing.process_images = watched
    gallery, table, note = in_worker(preview, "task(celebbasis-3)", "zed_host", [str(photo)], "auto (largest face)")
    assert "error" not in note and len(gallery) == len(asked) == service.settings.preview_count == 4, note
    assert all(a[:3] == (64, 64, 2) and len(a[3]) == 1 and "zed_host" in a[3][0] for a in asked)
    assert [a[4:7] for a in asked] == [(4, i, f"CelebBasis: preview {i + 1}/4") for i in range(4)]
    assert {a[7] for a in asked} == {"task(celebbasis-3)"} and [a[8] for a in asked] == [(i, 2) for i in range(1, 5)]
    assert [image.size for image, _ in gallery] == [(64, 64)] * 4
    assert any(row[0] == "zed_host" for row in table["value"])  # the table comes back (its Likeness column)
    assert snapshot(host) == before

    # Interrupt pressed in the tab while the first image renders: the host's sampler stops, nothing is shown
    callbacks, asked[:] = blocks.celebbasis_callbacks, []

    def interrupted(p):
        callbacks.interrupt()  # what the Interrupt button's click runs (in another worker, meanwhile)
        return watched(p)

    host.processing.process_images = interrupted
    gallery, _, note = in_worker(preview, "task(celebbasis-4)", "zed_host", [str(photo)], "auto (largest face)")
    assert gallery == [] and "interrupted" in note and len(asked) == 1
    assert asked[0][8][0] == 0  # the host stopped before finishing an image
    assert state.interrupted is False and service.progress()["message"] == "preview interrupted"
    callbacks.interrupt()  # with nothing of ours running, the host's generation is left alone
    assert state.interrupted is False
    host.processing.process_images = process_images
    assert snapshot(host) == before

    # the size setting, when set, wins over the recorded training size; without either, the family's own
    size = module.host.preview_size
    host.shared.opts.data["celebbasis_preview_size"] = 128
    assert size(path, host.shared.sd_model) == 128
    host.shared.opts.data["celebbasis_preview_size"] = 0
    assert size(path, host.shared.sd_model) == 64
    assert size(tmp_path / "missing.safetensors", host.shared.sd_model) == {"sdxl": 1024, "sd20": 768}.get(kind, 512)


@pytest.mark.parametrize("flavor, kind", [("neo", "sdxl"), ("main", "sd15")])
def test_api_under_queue_lock_and_api_auth(forge, tmp_path, flavor, kind):
    from fastapi.testclient import TestClient

    host = forge.boot(tmp_path / "webui", flavor=flavor, kind=kind, args=ARGS, extensions=[ROOT])
    service = script_module(host).service()
    fast_settings(service, tmp_path)
    client = TestClient(host.start_app())
    assert client.get("/celebbasis/v1/identities").status_code == 401
    assert client.get("/celebbasis/v1/identities", auth=("alice", "nope")).status_code == 401
    assert client.post("/sdapi/v1/txt2img", json={}).status_code == 401  # the host's own route, same users

    held = []
    original_hook = service.host_progress
    service.host_progress = lambda update: (original_hook(update),
                                            held.append(host.modules.call_queue.queue_lock.locked()))
    assert "TI" not in client.post("/sdapi/v1/txt2img", json={"prompt": "a cat"}, auth=("alice", "pw")).json()["info"]
    before = snapshot(host)  # after a generation, as a running host is (the engines' splice list is None then)
    body = {"images": [b64_image()], "name": "zed_api", "steps": 2, "face_encoder": "none"}
    response = client.post("/celebbasis/v1/tune", json=body, auth=("alice", "pw"))
    service.host_progress = original_hook
    assert response.status_code == 200, response.text
    assert response.json()["family"] == ("sdxl" if kind == "sdxl" else "sd1")
    assert held == [True, True, True] and not host.modules.call_queue.queue_lock.locked()  # steps 0, 1, 2
    assert snapshot(host) == before
    info = client.post("/sdapi/v1/txt2img", json={"prompt": "a photo of zed_api"}, auth=("alice", "pw")).json()["info"]
    assert "TI: zed_api" in info  # the host's next generation uses it
    listed = client.get("/celebbasis/v1/identities", auth=("alice", "pw")).json()["identities"]
    assert [item["name"] for item in listed] == ["zed_api"]
    assert client.delete("/celebbasis/v1/identities/zed_api", auth=("alice", "pw")).status_code == 200
    info = client.post("/sdapi/v1/txt2img", json={"prompt": "a photo of zed_api"}, auth=("alice", "pw")).json()["info"]
    assert "zed_api" not in info
    host.modules.script_callbacks.script_unloaded_callback()


@pytest.mark.parametrize("flavor, kind", [("neo", "sd15"), ("main", "sdxl")])
def test_names_of_embeddings_loaded_from_elsewhere_are_refused(forge, tmp_path, flavor, kind):
    """Forge main's sd_hijack has no embedding_db and Neo has no sd_hijack: the engines' databases are read."""
    from safetensors.torch import save_file

    from celebbasis_ext.hosts.reload import reload_embeddings

    host = forge.boot(tmp_path / "webui", flavor=flavor, kind=kind, args=ARGS, extensions=[ROOT])
    service = script_module(host).service()
    assert service.check_name("zed_elsewhere").ok
    elsewhere = Path(host.shared.cmd_opts.embeddings_dir) / "zed_elsewhere.safetensors"  # not in our subfolder
    save_file({"emb_params": torch.zeros(1, 7)}, str(elsewhere))
    reload_embeddings()  # any shape: a skipped embedding's name is taken too
    check = service.check_name("zed_elsewhere")
    assert check.level == "error" and "already loaded from another folder" in check.message
