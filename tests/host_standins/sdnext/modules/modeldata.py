"""``modules.modeldata`` of SD.Next: ``model_data`` (loads the selected checkpoint on first access),
``get_model_type`` (from the pipeline's class name) and the ``Shared`` module class."""

import threading
import types


def get_model_type(pipe):
    name = pipe.__class__.__name__
    if "StableDiffusion3" in name:
        return "sd3"
    if "StableDiffusionXL" in name:
        return "sdxl"
    if "StableDiffusion" in name:
        return "sd"
    if "Flux" in name:
        return "f1"
    return name


class ModelData:
    def __init__(self):
        self.sd_model = None
        self.sd_model_name = None
        self.lock = threading.Lock()
        self.locked = False

    def get_sd_model(self):
        from modules import shared

        if self.sd_model is None and shared.opts.sd_model_checkpoint != "None" and not self.lock.locked():
            with self.lock:
                from modules.sd_models import reload_model_weights

                self.sd_model = reload_model_weights(op="model")
                self.sd_model_name = shared.opts.sd_model_checkpoint
        return self.sd_model

    def set_sd_model(self, value):
        self.sd_model = value


model_data = ModelData()


class Shared(types.ModuleType):
    @property
    def sd_loaded(self):
        return model_data.sd_model is not None

    @property
    def sd_model(self):
        return model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        model_data.set_sd_model(value)

    @property
    def sd_model_type(self):
        return "none" if model_data.sd_model is None else get_model_type(model_data.sd_model)
