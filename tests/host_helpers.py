"""What the tests of the extension inside a host stand-in (A1111, Forge, SD.Next) share."""

from __future__ import annotations

import importlib.util
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import small_names_file

STANDINS = Path(__file__).resolve().parent / "host_standins"
OURS = "celebbasis.py"


def _gradio_problem() -> str:
    """Why gradio cannot be used here ('' when it can)."""
    try:
        from celebbasis_ext.webui.compat import import_gradio

        import_gradio()
    except Exception as error:  # noqa: BLE001 - the tab tests are skipped (an error under CI=true), the rest runs
        return f"gradio is not usable here ({type(error).__name__}: {error})"
    return ""


gradio_problem = _gradio_problem()
needs_gradio = pytest.mark.skipif(bool(gradio_problem), reason=gradio_problem or "gradio is usable")


def load_standin(host: str):
    """``tests/host_standins/<host>/standin.py`` as module ``<host>_standin`` (loaded once)."""
    name = f"{host}_standin"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, STANDINS / host / "standin.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def our_callbacks(host, category: str) -> list:
    return [c for c in host.modules.script_callbacks.callback_map[f"callbacks_{category}"]
            if Path(c.script).name == OURS]


def fast_settings(service, tmp_path) -> None:
    """The host's settings, read live, plus a small names list and a small training canvas for the tiny model."""
    host_settings = service.settings
    names = str(small_names_file(tmp_path))
    service.settings = lambda: replace(host_settings, names_file=names, basis_cache_dir=str(tmp_path / "basis"),
                                       tune_defaults={"pool_size": 2, "resolution": 64, "report_every": 1})


def queued_function(blocks, name: str):
    """The function gradio calls for a button (the host's wrap_gradio_gpu_call around ours, named ``name``)."""
    functions = blocks.fns.values() if isinstance(blocks.fns, dict) else blocks.fns
    for block_function in functions:
        fn = getattr(block_function, "fn", None)
        if fn is not None and getattr(fn, "__name__", "") == name and getattr(fn, "__wrapped__", None):
            return fn
    raise AssertionError(f"no {name} function found")


def in_worker(fn, *args):
    """Call ``fn`` in another thread, as gradio's worker pool calls event functions."""
    out = {}

    def run():
        try:
            out["result"] = fn(*args)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = error

    thread = threading.Thread(target=run, name="gradio-worker")
    thread.start()
    thread.join(120)
    if "error" in out:
        raise out["error"]
    return out["result"]
