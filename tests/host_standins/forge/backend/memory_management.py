"""``backend.memory_management``: devices and the loaded-model bookkeeping (CPU only here).

``load_models_gpu`` keeps ``current_loaded_models`` as Forge does: a patcher
already loaded moves to the front; otherwise clones of the same model are
unloaded first, then the patcher is loaded (its object patches applied, the
model moved to its load device, its LoRA patches refreshed). Every call is
recorded in ``load_calls``; ``soft_empty_cache`` counts in ``empty_cache_calls``.
Neo's signature has ``force_patch_weights``, ``minimum_memory_required`` and
``force_full_load``; Forge main's has ``hard_memory_preservation``.
"""

import os

import torch

FLAVOR = os.environ.get("FORGE_STANDIN_FLAVOR", "neo")
cpu = torch.device("cpu")
current_loaded_models = []
load_calls = []
empty_cache_calls = 0


def get_torch_device():
    return cpu


def text_encoder_device():
    return cpu


def text_encoder_offload_device():
    return cpu


def vae_device():
    return cpu


def vae_offload_device():
    return cpu


def intermediate_device():
    return cpu


def unet_offload_device():
    return cpu


def vae_dtype(device=None, allowed_dtypes=None):
    return torch.float32


def dtype_size(dtype):
    return torch.empty((), dtype=dtype).element_size()


def module_size(module):
    return sum(p.numel() * p.element_size() for p in module.parameters())


class LoadedModel:
    def __init__(self, model):
        self.model = model
        self.device = model.load_device

    def model_load(self):
        self.real_model = self.model.forge_patch_model(self.device)
        self.model.refresh_loras()
        return self.real_model

    def model_unload(self, avoid_model_moving=False):
        self.model.forge_unpatch_model(None if avoid_model_moving else self.model.offload_device)

    def __eq__(self, other):
        return self.model is other.model


def unload_model_clones(model):
    for index in reversed(range(len(current_loaded_models))):
        if model.is_clone(current_loaded_models[index].model):
            current_loaded_models.pop(index).model_unload(avoid_model_moving=True)


def _load(models, memory_required, options):
    load_calls.append({"models": [type(m.model).__name__ for m in models], "memory_required": memory_required,
                       "inference_mode": torch.is_inference_mode_enabled(), **options})
    for model in models:
        loaded = LoadedModel(model)
        if loaded in current_loaded_models:
            current_loaded_models.insert(0, current_loaded_models.pop(current_loaded_models.index(loaded)))
            continue
        unload_model_clones(model)
        loaded.model_load()
        current_loaded_models.insert(0, loaded)


if FLAVOR == "neo":
    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        _load(models, memory_required, {"force_full_load": force_full_load})
else:
    def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
        _load(models, memory_required, {})


def load_model_gpu(model):
    return load_models_gpu([model])


def soft_empty_cache(force=False):
    global empty_cache_calls
    empty_cache_calls += 1


def unload_all_models():
    while current_loaded_models:
        current_loaded_models.pop().model_unload()
