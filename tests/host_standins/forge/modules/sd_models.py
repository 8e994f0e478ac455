"""``modules.sd_models`` of Forge: ``FakeInitialModel`` until the first load, ``model_data``, and
``forge_model_reload()`` (under ``torch.inference_mode``) loading ``forge_loading_parameters['checkpoint_info']``."""

import os

import torch

from backend import memory_management
from backend.args import dynamic_args
from modules import shared


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        self.name = os.path.basename(filename)
        self.model_name = os.path.splitext(self.name)[0]
        self.name_for_extra = self.model_name

    def calculate_shorthash(self):
        return "0123456789"


class FakeInitialModel:
    def __init__(self):
        self.cond_stage_model = None
        self.chunk_length = 75


class SdModelData:
    def __init__(self):
        self.sd_model = FakeInitialModel()
        self.forge_loading_parameters = {}
        self.forge_hash = ""

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, value):
        self.sd_model = value


model_data = SdModelData()


@torch.inference_mode()
def forge_model_reload():
    current_hash = str(model_data.forge_loading_parameters)
    if model_data.forge_hash == current_hash:
        return model_data.sd_model, False
    if model_data.sd_model:
        model_data.sd_model = None
        memory_management.unload_all_models()
    checkpoint_info = model_data.forge_loading_parameters.get("checkpoint_info")
    if checkpoint_info is None:
        raise ValueError("You do not have any model! Please download at least one model in [models/Stable-diffusion].")
    dynamic_args["embedding_dir"] = shared.cmd_opts.embeddings_dir
    dynamic_args["forge_unet_storage_dtype"] = model_data.forge_loading_parameters.get("unet_storage_dtype")
    from backend.loader import forge_loader

    sd_model = forge_loader(checkpoint_info.filename, storage_dtype=dynamic_args["forge_unet_storage_dtype"])
    sd_model.extra_generation_params = {}
    sd_model.sd_checkpoint_info = checkpoint_info
    sd_model.filename = checkpoint_info.filename
    sd_model.sd_model_hash = checkpoint_info.calculate_shorthash()
    model_data.set_sd_model(sd_model)
    model_data.forge_hash = current_hash
    return sd_model, True
