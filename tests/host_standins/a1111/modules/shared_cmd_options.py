"""modules/shared_cmd_options.py: parse the command line after extensions' ``preload(parser)``.

The stand-in parses ``$A1111_STANDIN_ARGS`` instead of ``sys.argv`` and preloads
every folder in ``<data>/extensions`` (the real one asks ``launch.list_extensions``
which are enabled).
"""

import os

from modules import cmd_args, script_loading
from modules.paths_internal import models_path, script_path, data_path, sd_configs_path, sd_default_config, sd_model_file, default_sd_model_file, extensions_dir, extensions_builtin_dir, argv  # noqa: F401

parser = cmd_args.parser

script_loading.preload_extensions(extensions_dir, parser)
script_loading.preload_extensions(extensions_builtin_dir, parser)

if os.environ.get("IGNORE_CMD_ARGS_ERRORS", None) is None:
    cmd_opts = parser.parse_args(argv)
else:
    cmd_opts, _ = parser.parse_known_args(argv)

cmd_opts.webui_is_non_local = any([cmd_opts.share, cmd_opts.listen, cmd_opts.ngrok, cmd_opts.server_name])
cmd_opts.disable_extension_access = cmd_opts.webui_is_non_local and not cmd_opts.enable_insecure_extension_access
