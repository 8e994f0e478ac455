"""ComfyUI entry point: this repository, cloned into ``ComfyUI/custom_nodes``, is a node pack.

ComfyUI imports this file and reads ``NODE_CLASS_MAPPINGS`` and
``NODE_DISPLAY_NAME_MAPPINGS`` (the nodes are in ``celebbasis_ext/comfyui``).
Loading imports no gradio, no WebUI module and nothing heavy; the engine is
imported when a node runs. The WebUIs never import this file (they load
``scripts/*.py``), and it changes nothing when pytest imports it as a package.

``celebbasis_ext`` is imported from this folder (on ``sys.path`` only for that
import), so a pip-installed copy of the command line cannot shadow it.
"""

import logging
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _import_nodes():
    loaded = sys.modules.get("celebbasis_ext")
    if loaded is not None:
        location = os.path.realpath(os.path.dirname(os.path.dirname(getattr(loaded, "__file__", "") or "")))
        if location != os.path.realpath(_HERE):  # another copy: use ours
            logging.getLogger("celebbasis").warning("CelebBasis: replacing celebbasis_ext from %s", location)
            for name in [n for n in sys.modules if n == "celebbasis_ext" or n.startswith("celebbasis_ext.")]:
                del sys.modules[name]
    added = _HERE not in sys.path
    if added:
        sys.path.insert(0, _HERE)
    try:
        from celebbasis_ext.comfyui import nodes
    finally:
        if added:
            sys.path.remove(_HERE)
    return nodes


_nodes = _import_nodes()
NODE_CLASS_MAPPINGS = _nodes.NODE_CLASS_MAPPINGS
NODE_DISPLAY_NAME_MAPPINGS = _nodes.NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
