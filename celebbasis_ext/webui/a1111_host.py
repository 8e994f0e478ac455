"""The glue between ``CelebBasisService`` and an AUTOMATIC1111-style host (A1111 1.10, Forge).

``scripts/celebbasis.py`` only registers callbacks; what they do lives here:
the "CelebBasis" settings section, reading the settings (also under
--nowebui, where on_ui_settings never runs), the output folder inside the
host's embeddings folder, the loaded model as a ``ModelAdapter``, the
host's progress (``shared.state``) and Interrupt, reloading embeddings after
a file is written or deleted, preview renders through ``process_images``,
the tab through ``wrap_gradio_gpu_call`` and the API under the host's
``queue_lock`` and --api-auth.

Every host module is imported inside a function, and nothing imports ldm or
sgm, so this module imports in Forge (which has neither) and before a model
is loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

from ..errors import BadInput
from ..pipeline import FACE_ENCODERS
from ..service import DEFAULT_PRESET, PRESETS, CelebBasisService, ServiceSettings
from ..tuning import TuneProgress

log = logging.getLogger(__name__)

SECTION = ("celebbasis", "CelebBasis")
TAB_TITLE = "CelebBasis"
TAB_ID = "celebbasis"  # the host wraps the tab in #tab_celebbasis
DEFAULT_SUBFOLDER = "celebbasis"

#: key -> (default, label). Components are chosen in ``add_settings``.
OPTIONS = {
    "celebbasis_face_encoder": ("auto", "Face encoder (auto: insightface's buffalo_l if found, else dlib)"),
    "celebbasis_models_dir": ("", "Face models folder (empty: models/insightface, ControlNet's, ~/.insightface)"),
    "celebbasis_allow_download": (False, "Allow downloading face models (insightface buffalo_l, non-commercial use)"),
    "celebbasis_default_preset": (DEFAULT_PRESET, "Default preset"),
    "celebbasis_subfolder": (DEFAULT_SUBFOLDER, "Output subfolder inside the embeddings folder"),
    "celebbasis_save_fp16": (False, "Save embeddings in fp16 (half the size; fp32 is the default)"),
    "celebbasis_preview_steps": (20, "Sampling steps of preview images"),
    "celebbasis_preview_size": (0, "Preview size in pixels (0: the size the identity was trained at)"),
    "celebbasis_train_resolution": (0, "Training size in pixels (0: the model's own, 512 SD1.5 / 768 SD2 / 1024 SDXL; "
                                       "lower it, e.g. 768 for SDXL, when tuning runs out of GPU memory)"),
}


def _shared():
    from modules import shared

    return shared


def opt(key: str):
    """An option's value; ``opts.data`` works under --nowebui, where the settings UI never registered it."""
    shared = _shared()
    default = OPTIONS[key][0]
    data = getattr(getattr(shared, "opts", None), "data", None) or {}
    value = data.get(key, default)
    return default if value is None else value


def add_settings() -> None:
    """on_ui_settings: the "CelebBasis" section of Settings."""
    from .compat import import_gradio

    gr = import_gradio()

    shared = _shared()
    components = {
        "celebbasis_face_encoder": (gr.Dropdown, {"choices": list(FACE_ENCODERS)}),
        "celebbasis_default_preset": (gr.Radio, {"choices": list(PRESETS)}),
        "celebbasis_preview_steps": (gr.Slider, {"minimum": 1, "maximum": 150, "step": 1}),
        "celebbasis_preview_size": (gr.Slider, {"minimum": 0, "maximum": 1024, "step": 64}),
        "celebbasis_train_resolution": (gr.Slider, {"minimum": 0, "maximum": 1024, "step": 64}),
    }
    for key, (default, label) in OPTIONS.items():
        component, args = components.get(key, (None, None))
        info = shared.OptionInfo(default, label, component, args, section=SECTION)
        shared.opts.add_option(key, info)


# ---------------------------------------------------------------------------- settings and folders
def data_path() -> Optional[str]:
    """The host's data folder: ``paths_internal.data_path`` (A1111, Forge) or ``paths.data_path``
    (SD.Next, whose ``paths_internal`` is an empty file)."""
    for name in ("modules.paths_internal", "modules.paths"):
        try:
            value = getattr(importlib.import_module(name), "data_path", None)
        except ImportError:
            continue
        if value:
            return str(value)
    return None


def embeddings_root() -> Path:
    """The folder the host reads embeddings from (``hosts.reload`` knows where each host keeps it)."""
    from ..hosts.reload import embeddings_dir

    folder = embeddings_dir()
    if folder is None:
        folder = os.path.join(data_path() or ".", "embeddings")
    return Path(folder).expanduser().resolve()


def out_dir() -> Path:
    """``<embeddings>/<subfolder>``; a subfolder that would leave the embeddings folder is refused."""
    root = embeddings_root()
    sub = str(opt("celebbasis_subfolder") or DEFAULT_SUBFOLDER).strip()
    target = (root / sub).resolve()
    if target != root and root not in target.parents:
        log.warning("CelebBasis: output subfolder %r leaves %s; using %r", sub, root, DEFAULT_SUBFOLDER)
        target = root / DEFAULT_SUBFOLDER
    return target


def settings() -> ServiceSettings:
    """The current settings, with --celebbasis-models-dir and --celebbasis-no-download on top."""
    shared = _shared()
    cmd = shared.cmd_opts
    webui_root = data_path()
    models_dir = getattr(cmd, "celebbasis_models_dir", None) or opt("celebbasis_models_dir") or None
    try:
        preview_steps = int(opt("celebbasis_preview_steps"))
    except (TypeError, ValueError):
        preview_steps = 20
    try:
        train_resolution = int(opt("celebbasis_train_resolution") or 0)
    except (TypeError, ValueError):
        train_resolution = 0
    return ServiceSettings(
        face_encoder=str(opt("celebbasis_face_encoder") or "auto"),
        models_dir=models_dir,
        allow_download=bool(opt("celebbasis_allow_download")) and not getattr(cmd, "celebbasis_no_download", False),
        default_preset=str(opt("celebbasis_default_preset") or DEFAULT_PRESET),
        save_fp16=bool(opt("celebbasis_save_fp16")),
        webui_root=webui_root,
        preview_steps=max(1, preview_steps),
        tune_defaults={"resolution": train_resolution} if train_resolution > 0 else {},
    )


# ---------------------------------------------------------------------------- the model
def get_adapter():
    """The loaded model as a ``ModelAdapter`` (loading the selected checkpoint if none is, as txt2img does).

    ``hosts.detect`` picks the adapter for A1111's ldm/sgm models, Forge's
    engines or SD.Next's pipelines, or says in one line why it cannot.
    """
    from ..hosts.detect import adapter_for_loaded_model

    return adapter_for_loaded_model(load=True)


def _loaded_model():
    """The loaded model without triggering a load (None when none is loaded yet)."""
    for name in ("modules.sd_models", "modules.modeldata"):
        model_data = getattr(sys.modules.get(name), "model_data", None)
        if model_data is not None:
            model = getattr(model_data, "sd_model", None)
            return None if type(model).__name__ == "FakeInitialModel" else model
    return None


def reload_embeddings(path: Optional[Path] = None) -> None:
    """after_save: make the new (or deleted) file count in the very next generation."""
    if _loaded_model() is None:
        return  # embeddings are read when a model is loaded (reloading now would load one)
    from ..hosts.reload import reload_embeddings as reload_host

    removed = [path.stem] if path is not None and not path.exists() else []  # a deletion
    if not reload_host(removed=removed):
        log.warning("CelebBasis: could not reload embeddings in this host; restart it to use %s",
                    path.name if path else "the new file")


def _embedding_databases() -> list:
    """The databases prompts are read with: A1111's one, else SD.Next's pipeline's, else each text engine's of
    the loaded Forge/Neo model.

    Forge main keeps ``modules/sd_hijack.py`` without an ``embedding_db`` and Neo has no such module: there
    each text engine (``text_processing_engine``, ``_l``, ``_g``) holds its own, once a model is loaded.
    """
    try:
        from modules import sd_hijack

        database = getattr(sd_hijack.model_hijack, "embedding_db", None)
    except (ImportError, AttributeError):
        database = None
    if database is not None:
        return [database]
    model = _loaded_model()
    if model is None:
        return []
    if getattr(model, "embedding_db", None) is not None:  # SD.Next: the loaded pipeline's own database
        return [model.embedding_db]
    from ..hosts.reload import ENGINE_ATTRIBUTES

    engines = (getattr(model, name, None) for name in ENGINE_ATTRIBUTES)
    return [engine.embeddings for engine in engines if getattr(engine, "embeddings", None) is not None]


def known_embeddings() -> list[str]:
    """Names of embeddings the host has loaded from outside our folder."""
    ours = out_dir()
    names = []
    for database in _embedding_databases():
        for table in (getattr(database, "word_embeddings", {}), getattr(database, "skipped_embeddings", {})):
            for name, embedding in table.items():
                filename = getattr(embedding, "filename", None)
                if filename and Path(filename).resolve().parent == ours:
                    continue
                if name not in names:
                    names.append(name)
    return names


# ---------------------------------------------------------------------------- progress and interrupt
def host_progress(update: TuneProgress) -> None:
    """Tuning progress into ``shared.state``: /internal/progress shows it in the host's progress bar."""
    state = _shared().state
    if not state.sampling_step or update.step < state.sampling_step:
        # The host's progress bar computes its own ETA from time_start: start it at the first step,
        # not before the face detection, basis and augmented views (which take a while on a CPU).
        state.time_start = time.time()
    state.job_count = 1
    state.job_no = 0
    state.sampling_steps = update.total
    state.sampling_step = update.step
    if update.step == 0:
        state.textinfo = "CelebBasis: preparing (face, basis, augmented views)"
    else:
        state.textinfo = f"CelebBasis: step {update.step}/{update.total}, loss {update.loss:.4f}"


def host_should_cancel() -> bool:
    state = _shared().state
    return bool(getattr(state, "interrupted", False) or getattr(state, "stopping_generation", False))


def host_interrupt() -> None:
    """The tab's Interrupt during one of our jobs: the host's own flag, which its sampler checks every step."""
    _shared().state.interrupt()


def host_render_progress(done: int, total: int) -> None:
    """Previews into ``shared.state``: the bar counts images (``process_images`` keeps a job count that is set) and
    its sampler fills in the steps of each."""
    state = _shared().state
    state.job_count = total
    state.job_no = done
    state.sampling_step = 0
    state.textinfo = f"CelebBasis: preview {done + 1}/{total}"


def compute_device() -> Optional[str]:
    """Where tuning runs: the host's ``devices.device`` (the CPU with A1111's --use-cpu, Forge's --always-cpu or
    Neo's --cpu), known without loading a model."""
    try:
        from modules import devices
    except ImportError:
        return None
    device = getattr(devices, "device", None)
    return None if device is None else str(device)


@contextlib.contextmanager
def api_job():
    """API work under the host's queue lock with shared.state bookkeeping (as /sdapi/v1/txt2img)."""
    from modules import call_queue

    state = _shared().state
    with call_queue.queue_lock:
        state.begin("celebbasis")  # positional: A1111/Forge call it job=, SD.Next title=
        try:
            yield
        finally:
            state.end()
            state.interrupted = False
            state.skipped = False
            if hasattr(state, "stopping_generation"):
                state.stopping_generation = False


def api_credentials() -> Optional[dict]:
    """The users of the host's own API: --api-auth (A1111, Forge); SD.Next ignores --api-auth and protects
    its API with the --auth / --auth-file users (``user:password``, split at the first colon, quotes and
    spaces stripped)."""
    from ..hosts.detect import HostKind, detect_host
    from .api import parse_credentials

    cmd = _shared().cmd_opts
    if detect_host().kind != HostKind.SDNEXT:
        return parse_credentials(getattr(cmd, "api_auth", None))
    entries = [item for item in str(getattr(cmd, "auth", None) or "").split(",") if item.strip()]
    users = {}
    auth_file = getattr(cmd, "auth_file", None)
    if auth_file:
        try:
            with open(auth_file, encoding="utf8") as handle:
                entries += [line for line in handle.read().splitlines() if line.strip()]
        except OSError as error:
            log.warning("CelebBasis: cannot read --auth-file %s (%s): the API answers 401", auth_file, error)
            users[":"] = os.urandom(16).hex()  # no HTTP Basic user name contains ':': nobody gets in
    for entry in entries:
        user, sep, password = entry.partition(":")
        if sep and user.replace('"', "").strip():
            users[user.replace('"', "").strip()] = password.replace('"', "").strip()
    return users or None


# ---------------------------------------------------------------------------- previews
def preview_size(path, model) -> int:
    """The setting if set, else the size the identity was trained at (its file records it: on a CPU, or with a
    lowered training size, the family's native 512-1024 px would take far longer), else the family's own."""
    try:
        chosen = int(opt("celebbasis_preview_size") or 0)
    except (TypeError, ValueError):
        chosen = 0
    if chosen <= 0:
        from ..identity import read_metadata

        try:
            chosen = int(read_metadata(path).get("resolution") or 0)
        except (BadInput, TypeError, ValueError):
            chosen = 0
    if 64 <= chosen <= 2048:
        return chosen - chosen % 8
    return 1024 if getattr(model, "is_sdxl", False) else 768 if getattr(model, "is_sd2", False) else 512

def render(path, name: str, templates, seed: int = 0) -> list:
    """Preview images of ``templates`` (``{}`` = the token) through the host's txt2img."""
    from modules import processing

    shared = _shared()
    model = shared.sd_model
    if not hasattr(processing, "process_images"):
        raise BadInput("previews cannot be rendered in this host")
    size = preview_size(path, model)
    prompts = [template.format(name) for template in templates]
    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=model, prompt=prompts, negative_prompt="", seed=int(seed), n_iter=len(prompts), batch_size=1,
        steps=int(settings().preview_steps), cfg_scale=7.0, width=size, height=size,
        do_not_save_samples=True, do_not_save_grid=True,
    )
    try:
        processed = processing.process_images(p)
    finally:
        close = getattr(p, "close", None)
        if close is not None:
            close()
    if processed is None:  # SD.Next: no model, or the run was interrupted
        return []
    start = getattr(processed, "index_of_first_image", 0)
    return list(processed.images[start:start + len(prompts)])


# ---------------------------------------------------------------------------- assembly
def create_service() -> CelebBasisService:
    return CelebBasisService(
        get_adapter, out_dir, settings,
        after_save=reload_embeddings, render=render, known_embeddings=known_embeddings,
        host_progress=host_progress, host_should_cancel=host_should_cancel,
        host_render_progress=host_render_progress, host_interrupt=host_interrupt, device=compute_device,
    )


def ui_tabs(service: CelebBasisService) -> list:
    """on_ui_tabs: the tab, with Train and Preview through the host's GPU queue."""
    from modules.call_queue import wrap_gradio_gpu_call

    from .tab import build_tab

    return [(build_tab(service, queue_wrapper=wrap_gradio_gpu_call), TAB_TITLE, TAB_ID)]


def mount_api(service: CelebBasisService, app) -> bool:
    """on_app_started: the routes, only when the host serves its own API (--api or --nowebui)."""
    cmd = _shared().cmd_opts
    if not (getattr(cmd, "api", False) or getattr(cmd, "nowebui", False)):
        return False
    from .api import mount

    mount(app, service, lock=api_job, credentials=api_credentials)
    return True
