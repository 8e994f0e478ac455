"""Start a fresh stand-in A1111 1.10.1 host inside the test process.

    from standin import boot
    host = boot(tmp_path, args=["--no-half", "--use-cpu", "all"], model="sdxl", extensions=[repo_root])
    host.shared.sd_model ...; host.modules.sd_hijack.model_hijack.embedding_db ...
    app = host.start_app()  # FastAPI app with /internal/progress (+ /sdapi with --api), app_started callbacks run

Every ``boot`` drops all ``modules.*`` from ``sys.modules`` and imports them
again, so module-level host state (callbacks, options, queue, progress,
embedding database, lowvram) never leaks between tests. The order is the
host's (modules/initialize.py, webui.py): ``shared_init.initialize()`` ->
``scripts.load_scripts()`` (extensions' ``scripts/*.py``) -> optimizers listed
-> model loaded (``load=True``) -> optimisation applied if none yet.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
import types
from pathlib import Path
from typing import Iterable, Optional, Sequence

STANDIN_DIR = Path(__file__).resolve().parent
DEFAULT_ARGS = ("--no-half", "--use-cpu", "all", "--precision", "full", "--disable-nan-check")


def _purge_host_modules() -> None:
    for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.") or n == "launch"]:
        del sys.modules[name]


class Host(types.SimpleNamespace):
    """Handles on the freshly imported host modules."""

    def load_model(self, kind: str):
        """``sd_models.load_model`` for a stand-in kind (sd1, sd2, sdxl, sdxl-refiner, sd1-inpaint)."""
        sd_models = self.modules.sd_models
        model = sd_models.load_model(sd_models.checkpoint_for(kind))
        if self.modules.sd_hijack.current_optimizer is None:
            self.modules.sd_hijack.apply_optimizations()
        return model

    def start_app(self, demo=None):
        """What webui.py does after ``demo.launch``: progress routes, ``Api`` with --api/--nowebui,
        then ``app_started_callback(demo, app)``."""
        from fastapi import FastAPI

        app = FastAPI()
        progress = importlib.import_module("modules.progress")
        progress.setup_progress_api(app)
        cmd_opts = self.shared.cmd_opts
        if cmd_opts.api or cmd_opts.nowebui:
            api = importlib.import_module("modules.api.api")
            self.api = api.Api(app, self.modules.call_queue.queue_lock)
        self.modules.script_callbacks.before_ui_callback()
        self.modules.script_callbacks.app_started_callback(demo, app)
        return app


def boot(
    root: os.PathLike,
    *,
    args: Sequence[str] = DEFAULT_ARGS,
    model: Optional[str] = "sd1",
    extensions: Iterable[os.PathLike] = (),
    settings: Optional[dict] = None,
) -> Host:
    """A host whose webui root and data folder is ``root``; ``extensions`` are linked into
    ``root/extensions`` (by folder name) so their ``preload.py`` and ``scripts/*.py`` load."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if str(STANDIN_DIR) not in sys.path:
        sys.path.insert(0, str(STANDIN_DIR))
    ext_root = root / "extensions"
    ext_root.mkdir(exist_ok=True)
    for ext in extensions:
        ext = Path(ext).resolve()
        link = ext_root / ext.name
        if not link.exists():
            link.symlink_to(ext, target_is_directory=True)
    if settings:
        import json

        (root / "config.json").write_text(json.dumps(settings), encoding="utf8")

    _purge_host_modules()
    saved = {key: os.environ.get(key) for key in ("A1111_STANDIN_ROOT", "A1111_STANDIN_ARGS")}
    os.environ["A1111_STANDIN_ROOT"] = str(root)
    os.environ["A1111_STANDIN_ARGS"] = shlex.join(args)
    try:
        shared_init = importlib.import_module("modules.shared_init")
        shared_init.initialize()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    names = ["shared", "devices", "lowvram", "call_queue", "progress", "script_callbacks", "scripts",
             "sd_hijack", "sd_hijack_optimizations", "sd_hijack_checkpoint", "sd_models", "sd_models_xl",
             "options", "processing", "paths_internal", "errors"]
    mods = types.SimpleNamespace(**{name: importlib.import_module(f"modules.{name}") for name in names})
    mods.textual_inversion = importlib.import_module("modules.textual_inversion.textual_inversion")
    host = Host(modules=mods, shared=mods.shared, root=root)

    mods.scripts.load_scripts()
    mods.script_callbacks.on_list_optimizers(mods.sd_hijack_optimizations.list_optimizers)
    mods.sd_hijack.list_optimizers()
    if model is not None:
        host.load_model(model)
    return host
