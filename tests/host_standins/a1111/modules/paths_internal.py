"""Internal paths (modules/paths_internal.py).

The real module derives ``script_path`` from its own location and reads
``--data-dir``/``--models-dir`` from ``sys.argv``. The stand-in's "webui root"
is ``$A1111_STANDIN_ROOT`` (a fresh temporary folder when unset) and its
command line is ``$A1111_STANDIN_ARGS`` (pytest's own argv is never parsed).
"""

import argparse
import os
import shlex
import tempfile
from pathlib import Path

normalized_filepath = lambda filepath: str(Path(filepath).absolute())  # noqa: E731

commandline_args = os.environ.get("A1111_STANDIN_ARGS", "")
argv = shlex.split(commandline_args)

cwd = os.getcwd()
modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.environ.get("A1111_STANDIN_ROOT") or tempfile.mkdtemp(prefix="a1111-standin-")

sd_configs_path = os.path.join(script_path, "configs")
sd_default_config = os.path.join(sd_configs_path, "v1-inference.yaml")
sd_model_file = os.path.join(script_path, "model.ckpt")
default_sd_model_file = sd_model_file

parser_pre = argparse.ArgumentParser(add_help=False)
parser_pre.add_argument("--data-dir", type=str, default=script_path, help="base path where all user data is stored")
parser_pre.add_argument("--models-dir", type=str, default=None, help="base path where models are stored; overrides --data-dir")
cmd_opts_pre = parser_pre.parse_known_args(argv)[0]

data_path = cmd_opts_pre.data_dir

models_path = cmd_opts_pre.models_dir if cmd_opts_pre.models_dir else os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
config_states_dir = os.path.join(script_path, "config_states")
default_output_dir = os.path.join(data_path, "outputs")
