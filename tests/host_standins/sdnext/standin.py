"""Start a fresh stand-in SD.Next (diffusers backend) inside the test process.

    host = boot(tmp_path, checkpoint="tiny-sdxl")   # loads it, as the first access to shared.sd_model does
    shutdown()

``boot`` drops every ``modules`` module from ``sys.modules`` (other
stand-ins use the same name), puts this folder first on ``sys.path`` and
imports the host afresh with ``SDNEXT_STANDIN_ROOT`` / ``_CHECKPOINT`` /
``_OFFLOAD`` set; ``load=False`` leaves the model unloaded.
"""

from __future__ import annotations

import importlib
import os
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


def boot(root, *, checkpoint: str = "tiny-sd1", load: bool = True, offload: str = "balanced") -> types.SimpleNamespace:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shutdown()
    sys.path.insert(0, str(STANDIN_DIR))
    os.environ.update(SDNEXT_STANDIN_ROOT=str(root), SDNEXT_STANDIN_CHECKPOINT=checkpoint,
                      SDNEXT_STANDIN_OFFLOAD=offload)
    names = ["shared", "modeldata", "devices", "sd_models", "textual_inversion", "prompt_parser_diffusers",
             "sd_offload"]
    host = types.SimpleNamespace(root=root, **{n: importlib.import_module(f"modules.{n}") for n in names})
    os.makedirs(host.shared.opts.embeddings_dir, exist_ok=True)
    if load:
        host.shared.sd_model  # noqa: B018 - the property loads the selected checkpoint
    return host
