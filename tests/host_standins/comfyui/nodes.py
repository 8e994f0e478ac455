"""``nodes``: the built-in nodes the tests use and the custom-node loader.

As in ComfyUI: ``CLIPTextEncode.encode(clip, text)`` returns
``(clip.encode_from_tokens_scheduled(clip.tokenize(text)),)``; ``interrupt_processing(value=True)``
sets the interrupt flag; ``load_custom_node(module_path, ignore=set(), module_parent="custom_nodes")``
(a coroutine) imports ``module_path/__init__.py`` under the name ``module_path`` with "." replaced by
"_x_" (as a package, so relative imports work), registers ``NODE_CLASS_MAPPINGS`` /
``NODE_DISPLAY_NAME_MAPPINGS`` and sets each class's ``RELATIVE_PYTHON_MODULE``; an import error is
logged as "Cannot import ... module for custom nodes" and the folder is skipped (returns False).
"""

import importlib.util
import logging
import os
import sys
import traceback

import comfy.model_management

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
LOADED_MODULE_DIRS = {}


def interrupt_processing(value=True):
    comfy.model_management.interrupt_current_processing(value)


class CLIPTextEncode:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "conditioning"

    def encode(self, clip, text):
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text)),)


NODE_CLASS_MAPPINGS["CLIPTextEncode"] = CLIPTextEncode


def get_module_name(module_path):
    base = os.path.basename(module_path)
    return os.path.splitext(base)[0] if os.path.isfile(module_path) else base


async def load_custom_node(module_path, ignore=set(), module_parent="custom_nodes"):
    module_name = get_module_name(module_path)
    if os.path.isfile(module_path):
        sys_module_name = os.path.splitext(module_path)[0]
    else:
        sys_module_name = module_path.replace(".", "_x_")
    try:
        init = module_path if os.path.isfile(module_path) else os.path.join(module_path, "__init__.py")
        spec = importlib.util.spec_from_file_location(sys_module_name, init)
        module = importlib.util.module_from_spec(spec)
        sys.modules[sys_module_name] = module
        spec.loader.exec_module(module)
        LOADED_MODULE_DIRS[module_name] = os.path.abspath(os.path.dirname(init))
        if getattr(module, "NODE_CLASS_MAPPINGS", None) is not None:
            for name, node_cls in module.NODE_CLASS_MAPPINGS.items():
                if name not in ignore:
                    NODE_CLASS_MAPPINGS[name] = node_cls
                    node_cls.RELATIVE_PYTHON_MODULE = "{}.{}".format(module_parent, module_name)
            if getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) is not None:
                NODE_DISPLAY_NAME_MAPPINGS.update(module.NODE_DISPLAY_NAME_MAPPINGS)
            return True
        logging.warning(f"Skip {module_path} module for custom nodes due to the lack of NODE_CLASS_MAPPINGS.")
        return False
    except Exception as e:
        logging.warning(traceback.format_exc())
        logging.warning(f"Cannot import {module_path} module for custom nodes: {e}")
        return False
