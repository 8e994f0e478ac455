"""Run the A1111 stand-in's text of a module in a Forge stand-in module.

Forge main and Neo keep several extension-API files of A1111 1.10.1 unchanged
(same functions, same signatures and bodies; Neo only reformatted them): see
``tests/host_standins/FORGE_SDNEXT_FACTS.md``. For those, the Forge stand-in
runs the A1111 stand-in's source inside its own module, so ``from modules
import ...`` in that text resolves to the Forge stand-in's modules.
"""

import os
import sys

A1111_MODULES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "a1111", "modules")


def include(module_name: str) -> None:
    """Execute ``a1111/modules/<same relative path>.py`` in the namespace of ``module_name``."""
    relative = module_name.split(".", 1)[1].replace(".", os.sep) + ".py"
    path = os.path.join(A1111_MODULES, relative)
    with open(path, encoding="utf8") as handle:
        code = compile(handle.read(), path, "exec")
    namespace = sys.modules[module_name].__dict__
    namespace["__file__"] = path  # the text that runs (script_callbacks finds its caller by file name)
    exec(code, namespace)  # noqa: S102 - our own stand-in's text
