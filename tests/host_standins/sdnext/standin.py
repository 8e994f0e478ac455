"""Start a fresh stand-in SD.Next (diffusers backend) inside the test process.

    host = boot(tmp_path, checkpoint="tiny-sdxl")   # loads it, as the first access to shared.sd_model does
    shutdown()

    host = boot(tmp_path, args=["--auth", "alice:pw"], extensions=[repo_root])
    host.modules.script_callbacks ...; app = host.start_app()

``boot`` drops every ``modules`` module from ``sys.modules`` (other
stand-ins use the same name), puts this folder first on ``sys.path`` and
imports the host afresh with ``SDNEXT_STANDIN_ROOT`` / ``_CHECKPOINT`` /
``_OFFLOAD`` set; ``load=False`` leaves the model unloaded.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
import types
from pathlib import Path

STANDIN_DIR = Path(__file__).resolve().parent


def purge() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "modules"]:
        del sys.modules[name]


def shutdown() -> None:
    purge()
    while str(STANDIN_DIR) in sys.path:
        sys.path.remove(str(STANDIN_DIR))


class Host(types.SimpleNamespace):
    def start_app(self, demo=None):
        from fastapi import FastAPI

        app = FastAPI()
        api = importlib.import_module("modules.api.api")
        self.shared.api = api.Api(app, self.modules.call_queue.queue_lock)
        self.shared.api.register()
        self.modules.progress.setup_progress_api()
        self.modules.script_callbacks.app_started_callback(demo, app)
        return app


def boot(root, *, checkpoint: str = "tiny-sd1", load: bool = True, offload: str = "balanced", args=(),
         extensions=()) -> Host:
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
    os.environ.update(SDNEXT_STANDIN_ROOT=str(root), SDNEXT_STANDIN_CHECKPOINT=checkpoint,
                      SDNEXT_STANDIN_OFFLOAD=offload, SDNEXT_STANDIN_ARGS=shlex.join(args))
    names = ["shared", "modeldata", "devices", "sd_models", "textual_inversion", "prompt_parser_diffusers",
             "sd_offload"]
    api_names = ["call_queue", "progress", "script_callbacks", "scripts", "scripts_manager", "paths", "errors"]
    host = Host(root=root, modules=types.SimpleNamespace(
        **{n: importlib.import_module(f"modules.{n}") for n in api_names}),
        **{n: importlib.import_module(f"modules.{n}") for n in names})
    host.modules.scripts.load_scripts()
    os.makedirs(host.shared.opts.embeddings_dir, exist_ok=True)
    if load:
        host.shared.sd_model  # noqa: B018 - the property loads the selected checkpoint
    return host
