"""Start a fresh stand-in Forge (main) or Forge Neo host inside the test process.

    from standin import boot, shutdown
    host = boot(tmp_path, flavor="neo", kind="sdxl")   # loads tiny-sdxl like the first generation would
    host.shared.sd_model ...; host.processing.txt2img("a photo of zqx") ...
    shutdown()                                         # drop the host's modules and sys.path entries

    host = boot(tmp_path, flavor="main", args=["--api"], extensions=[repo_root])
    host.modules.script_callbacks ...; app = host.start_app()

``boot`` drops every ``modules``, ``backend`` and ``modules_forge`` module from
``sys.modules`` (other stand-ins use the same top-level names), puts this
folder first on ``sys.path``, and imports the host afresh with
``FORGE_STANDIN_FLAVOR`` / ``FORGE_STANDIN_ROOT`` / ``FORGE_STANDIN_ATTENTION``
set. ``load=False`` leaves ``shared.sd_model`` a ``FakeInitialModel`` with
the checkpoint selected, as after start-up.

The start-up follows Forge's (``initialize.py`` / ``webui.py``): the command
line ``args`` (``$FORGE_STANDIN_ARGS``) is parsed after the ``preload.py`` of
every folder in ``<root>/extensions`` (``extensions`` are linked there),
``shared_init.initialize()``, ``scripts.load_scripts()`` (which leaves each
extension folder on ``sys.path``, as Forge does), and a thread runs
``modules_forge.main_thread.loop()`` (the real host runs it on the process's
main thread and the web server elsewhere). ``host.start_app()`` builds the
FastAPI app: progress routes, ``Api`` with --api/--nowebui, then
``app_started_callback(demo, app)``.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
import threading
import types
from pathlib import Path
from typing import Optional

STANDIN_DIR = Path(__file__).resolve().parent
PACKAGES = ("modules", "backend", "modules_forge")
_added_paths = []  # extension folders load_scripts left on sys.path


def purge() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in PACKAGES]:
        del sys.modules[name]


def shutdown() -> None:
    main_thread = sys.modules.get("modules_forge.main_thread")
    if main_thread is not None:
        main_thread.stop()
    purge()
    for path in [str(STANDIN_DIR)] + _added_paths:
        while path in sys.path:
            sys.path.remove(path)
    _added_paths.clear()


class Host(types.SimpleNamespace):
    def start_app(self, demo=None):
        from fastapi import FastAPI

        app = FastAPI()
        self.modules.progress.setup_progress_api(app)
        cmd_opts = self.shared.cmd_opts
        if cmd_opts.api or cmd_opts.nowebui:
            api = importlib.import_module("modules.api.api")
            self.api = api.Api(app, self.modules.call_queue.queue_lock)
        self.modules.script_callbacks.before_ui_callback()
        self.modules.script_callbacks.app_started_callback(demo, app)
        return app


def boot(root, *, flavor: str = "neo", kind: Optional[str] = "sd15", load: bool = True, attention: str = "sage",
         storage_dtype=None, args=(), extensions=()) -> Host:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shutdown()
    sys.path.insert(0, str(STANDIN_DIR))
    (root / "extensions").mkdir(exist_ok=True)
    for ext in extensions:
        ext = Path(ext).resolve()
        link = root / "extensions" / ext.name
        if not link.exists():
            link.symlink_to(ext, target_is_directory=True)
    os.environ.update(FORGE_STANDIN_FLAVOR=flavor, FORGE_STANDIN_ROOT=str(root), FORGE_STANDIN_ATTENTION=attention,
                      FORGE_STANDIN_ARGS=shlex.join(args))
    importlib.import_module("modules.shared_init").initialize()
    names = ["modules.shared", "modules.sd_models", "modules.processing", "modules_forge.forge_version",
             "backend.args", "backend.attention", "backend.memory_management", "backend.nn.unet",
             "backend.text_processing.classic_engine"]
    mods = {name.split(".")[-1]: importlib.import_module(name) for name in names}
    api_names = ["call_queue", "progress", "script_callbacks", "scripts", "options", "paths_internal", "txt2img",
                 "errors"]
    host = Host(root=root, flavor=flavor, modules=types.SimpleNamespace(
        **{name: importlib.import_module(f"modules.{name}") for name in api_names},
        main_thread=importlib.import_module("modules_forge.main_thread")), **mods)
    before = list(sys.path)
    host.modules.scripts.load_scripts()
    _added_paths.extend(path for path in sys.path if path not in before)
    threading.Thread(target=host.modules.main_thread.loop, name="forge-main-thread", daemon=True).start()
    os.makedirs(mods["shared"].cmd_opts.embeddings_dir, exist_ok=True)
    if kind is not None:
        info = mods["sd_models"].CheckpointInfo(str(root / "models" / "Stable-diffusion" / f"tiny-{kind}.safetensors"))
        parameters = {"checkpoint_info": info, "unet_storage_dtype": storage_dtype}
        host.sd_models.model_data.forge_loading_parameters = parameters
        if load:
            host.sd_models.forge_model_reload()
    return host


def apply_lora(sd_model, name: str = "lora", strength: float = 1.0, seed: int = 0):
    """What Forge's LoRA extra network does: a UNet clone with patches becomes ``forge_objects.unet``."""
    import torch

    unet = sd_model.forge_objects_original.unet.clone()
    generator = torch.Generator().manual_seed(seed)
    patches = {key: torch.randn(param.shape, generator=generator) * 0.05
               for key, param in unet.model.named_parameters() if key.endswith("attn2.to_k.weight")}
    unet.add_patches(filename=name, patches=patches, strength_patch=strength)
    objects = sd_model.forge_objects_original.shallow_copy()
    objects.unet = unet
    sd_model.forge_objects = objects
    return unet
