"""``modules.shared`` of SD.Next: ``opts`` (embeddings_dir, offload mode, ...), ``native`` (diffusers
backend) and ``sd_model`` / ``sd_loaded`` / ``sd_model_type`` as properties of the module
(SD.Next swaps the module's class for ``modules.modeldata.Shared``)."""

import os
import sys
import types

_root = os.environ.get("SDNEXT_STANDIN_ROOT", os.getcwd())
native = True
cmd_opts = types.SimpleNamespace(data_dir=_root, medvram=False, lowvram=False)


class Options:
    def __init__(self):
        self.data = {
            "embeddings_dir": os.path.join(_root, "models", "embeddings"),
            "sd_model_checkpoint": os.environ.get("SDNEXT_STANDIN_CHECKPOINT", "None"),
            "diffusers_offload_mode": os.environ.get("SDNEXT_STANDIN_OFFLOAD", "balanced"),
            "diffusers_enable_embed": True,
            "diffusers_convert_embed": False,
            "sd_textencoder_cache_size": 4,
            "inference_mode": "no-grad",
        }

    def __getattr__(self, item):
        try:
            return self.__dict__["data"][item]
        except KeyError:
            raise AttributeError(item) from None

    def __setattr__(self, key, value):
        if key == "data":
            self.__dict__["data"] = value
        else:
            self.__dict__["data"][key] = value


opts = Options()

from modules.modeldata import Shared  # noqa: E402

sys.modules[__name__].__class__ = Shared
