"""``modules.shared`` of Forge: ``cmd_opts`` (embeddings_dir: ``<data>/embeddings`` in Forge main,
``models/embeddings`` in Neo), ``opts``, and ``sd_model`` as a property (Forge's ``shared_items.Shared``)."""

import os
import sys
import types

FLAVOR = os.environ.get("FORGE_STANDIN_FLAVOR", "neo")
_root = os.environ.get("FORGE_STANDIN_ROOT", os.getcwd())

cmd_opts = types.SimpleNamespace(
    embeddings_dir=os.path.join(_root, "embeddings") if FLAVOR == "main"
    else os.path.join(_root, "models", "embeddings"),
    api=False, nowebui=False, data_dir=_root,
)


class Options:
    def __init__(self):
        self.data = {"emphasis": "Original", "sdxl_crop_left": 0, "sdxl_crop_top": 0, "persistent_cond_cache": True,
                     "CLIP_stop_at_last_layers": 1}

    def __getattr__(self, item):
        try:
            return self.__dict__["data"][item]
        except KeyError:
            raise AttributeError(item) from None


opts = Options()


class Shared(types.ModuleType):
    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules[__name__].__class__ = Shared
