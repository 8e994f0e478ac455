"""``modules/paths_internal.py`` of Forge main / Neo.

The real module derives ``script_path`` from its own location and reads
``--data-dir`` / ``--models-dir`` from ``sys.argv``. Here the webui root is
``$FORGE_STANDIN_ROOT`` and the command line ``$FORGE_STANDIN_ARGS`` (pytest's
argv is never parsed).
"""

import argparse
import os
import shlex
import tempfile
from pathlib import Path

normalized_filepath = lambda filepath: str(Path(filepath).absolute())  # noqa: E731

argv = shlex.split(os.environ.get("FORGE_STANDIN_ARGS", ""))
cwd = os.getcwd()
modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.environ.get("FORGE_STANDIN_ROOT") or tempfile.mkdtemp(prefix="forge-standin-")

parser_pre = argparse.ArgumentParser(add_help=False)
parser_pre.add_argument("--data-dir", type=str, default=script_path)
parser_pre.add_argument("--models-dir", type=str, default=None)
cmd_opts_pre = parser_pre.parse_known_args(argv)[0]

data_path = cmd_opts_pre.data_dir
models_path = cmd_opts_pre.models_dir if cmd_opts_pre.models_dir else os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
default_output_dir = os.path.join(data_path, "output")
