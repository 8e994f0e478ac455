"""modules/paths.py (only the names re-exported from paths_internal)."""

from modules.paths_internal import models_path, script_path, data_path, extensions_dir, extensions_builtin_dir, cwd  # noqa: F401
