"""``modules/script_loading.py`` of SD.Next: ``load_module(path)`` (an exception during the import is
reported by ``errors.display`` and the half-imported module returned; the script's stdout is captured
and logged) and ``preload_extensions(extensions_dir, parser)`` (once per folder name)."""

import contextlib
import importlib.util
import io
import os

from modules import errors

preloaded = []


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            module_spec.loader.exec_module(module)
    except Exception as e:
        errors.display(e, f"Module load: {path}")
    return module


def preload_extensions(extensions_dir, parser):
    if not os.path.isdir(extensions_dir):
        return
    for dirname in sorted(os.listdir(extensions_dir)):
        if dirname in preloaded:
            continue
        preloaded.append(dirname)
        preload_script = os.path.join(extensions_dir, dirname, "preload.py")
        if not os.path.isfile(preload_script):
            continue
        try:
            module = load_module(preload_script)
            if hasattr(module, "preload"):
                module.preload(parser)
        except Exception as e:
            errors.display(e, f"Extension preload: {preload_script}")
