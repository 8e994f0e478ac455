"""``modules/cmd_args.py`` of Forge main / Neo: the flags the extension and the stand-in read.

Same names and defaults as the real ones: ``--embeddings-dir`` is
``<data>/embeddings`` in Forge main and ``<models>/embeddings`` in Neo;
``--api``, ``--api-auth`` ("u1:p1,u2:p2"), ``--nowebui``; Forge main's CPU flag
is ``--always-cpu``, Neo's ``--cpu``.
"""

import argparse
import os

from modules.paths_internal import data_path, models_path, normalized_filepath, script_path  # noqa: F401

FLAVOR = os.environ.get("FORGE_STANDIN_FLAVOR", "neo")

parser = argparse.ArgumentParser()
add = parser.add_argument
for name in ("--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--share", "--listen",
             "--hide-ui-dir-config", "--freeze-settings", "--api", "--api-log", "--nowebui",
             "--skip-load-model-at-start", "--enable-insecure-extension-access"):
    add(name, action="store_true")
add("--always-cpu" if FLAVOR == "main" else "--cpu", action="store_true")
add("--data-dir", type=normalized_filepath, default=data_path)
add("--models-dir", type=normalized_filepath, default=None)
add("--embeddings-dir", type=normalized_filepath,
    default=os.path.join(data_path, "embeddings") if FLAVOR == "main" else os.path.join(models_path, "embeddings"))
add("--hypernetwork-dir", type=normalized_filepath, default=os.path.join(models_path, "hypernetworks"))
add("--ui-settings-file", type=str, default=os.path.join(data_path, "config.json"))
add("--styles-file", type=str, action="append", default=[])
add("--gradio-auth", type=str, default=None)
add("--api-auth", type=str, default=None)
add("--server-name", type=str, default=None)
add("--port", type=int, default=None)
