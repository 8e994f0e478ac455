"""``modules/shared_cmd_options.py`` of Forge main / Neo: extensions' ``preload(parser)`` run, then the command
line is parsed (the real one asks ``launch.list_extensions`` which folders are enabled; here every folder in
``<data>/extensions`` is)."""

from modules import cmd_args, script_loading
from modules.paths_internal import argv, data_path, extensions_builtin_dir, extensions_dir, models_path, script_path  # noqa: F401

parser = cmd_args.parser

script_loading.preload_extensions(extensions_dir, parser)
script_loading.preload_extensions(extensions_builtin_dir, parser)

cmd_opts = parser.parse_args(argv)
cmd_opts.webui_is_non_local = any([cmd_opts.share, cmd_opts.listen, cmd_opts.server_name])
cmd_opts.disable_extension_access = cmd_opts.webui_is_non_local and not cmd_opts.enable_insecure_extension_access
