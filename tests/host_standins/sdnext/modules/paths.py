"""``modules/paths.py`` of SD.Next: ``script_path`` (here ``$SDNEXT_STANDIN_ROOT``), ``data_path``
(``--data-dir``), ``models_path`` (``<data>/models``), ``extensions_dir`` (``<data>/extensions``)."""

import os
import tempfile

script_path = os.environ.get("SDNEXT_STANDIN_ROOT") or tempfile.mkdtemp(prefix="sdnext-standin-")
data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
