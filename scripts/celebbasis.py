"""CelebBasis for the WebUI: registers the tab, the settings, the API routes. Wiring only.

Everything the callbacks do is in ``celebbasis_ext/webui/a1111_host.py``; the
engine knows nothing about the host. The package is imported from this
extension's own folder (first on sys.path while this file loads), so another
copy of ``celebbasis_ext`` (a pip-installed CLI, a second clone) cannot
shadow it. No ldm/sgm import, no model access at import time.
"""

import logging
import os
import sys

from modules import script_callbacks

_EXTENSION_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_host_glue():
    here = os.path.realpath(_EXTENSION_DIR)
    loaded = sys.modules.get("celebbasis_ext")
    if loaded is not None:
        location = os.path.realpath(os.path.dirname(getattr(loaded, "__file__", "") or ""))
        if os.path.dirname(location) != here:  # another copy: use ours
            logging.getLogger("celebbasis").warning("CelebBasis: replacing celebbasis_ext from %s", location)
            for name in [n for n in sys.modules if n == "celebbasis_ext" or n.startswith("celebbasis_ext.")]:
                del sys.modules[name]
    if _EXTENSION_DIR not in sys.path:
        sys.path.insert(0, _EXTENSION_DIR)
    from celebbasis_ext.webui import a1111_host

    return a1111_host


host = _import_host_glue()
_service = None


def service():
    global _service
    if _service is None:
        _service = host.create_service()
    return _service


def on_ui_tabs():
    return host.ui_tabs(service())


def on_ui_settings():
    host.add_settings()


def on_app_started(demo, app):
    host.mount_api(service(), app)


def on_script_unloaded():
    if _service is not None:
        _service.cancel()


script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_script_unloaded(on_script_unloaded)
