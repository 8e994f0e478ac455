"""``comfy.model_management``: devices, dtypes, the loaded-models list and the interrupt flag.

As in ComfyUI: ``load_models_gpu(models, memory_required=0, force_patch_weights=False,
minimum_memory_required=None, force_full_load=False)`` unloads other clones of the same model
(their weight patches come out), then patches and loads each model (weight patches in, object
patches set) and puts it first in ``current_loaded_models``; ``text_encoder_dtype`` is fp16 on
the CPU; ``throw_exception_if_processing_interrupted`` raises ``InterruptProcessingException``
and clears the flag. Everything runs on the CPU here; ``load_calls`` records the calls for tests.
"""

import threading

import torch

current_loaded_models = []
load_calls = []


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()
interrupt_processing = False


def interrupt_current_processing(value=True):
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted():
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def text_encoder_device():
    return torch.device("cpu")


def text_encoder_offload_device():
    return torch.device("cpu")


def text_encoder_dtype(device=None):
    return torch.float16


def vae_device():
    return torch.device("cpu")


def vae_offload_device():
    return torch.device("cpu")


def vae_dtype(device=None, allowed_dtypes=()):
    return torch.float32


def dtype_size(dtype):
    return torch.tensor([], dtype=dtype).element_size()


def module_size(module):
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def cast_to(weight, dtype=None, device=None, non_blocking=False, copy=False, stream=None):
    if device is None or weight.device == device:
        if not copy and (dtype is None or weight.dtype == dtype):
            return weight
        return weight.to(dtype=dtype, copy=copy)
    result = torch.empty_like(weight, dtype=dtype, device=device)
    result.copy_(weight, non_blocking=non_blocking)
    return result


def cast_to_device(tensor, device, dtype, copy=False):
    return cast_to(tensor, dtype=dtype, device=device, copy=copy)


class LoadedModel:
    def __init__(self, model):
        self.model = model
        self.device = model.load_device
        self.currently_used = True

    def model_load(self, force_patch_weights=False):
        self.model.patch_model(self.device, force_patch_weights=force_patch_weights)
        return self.model.model

    def model_unload(self):
        self.model.unpatch_model(self.model.offload_device)

    def __eq__(self, other):
        return self.model is other.model


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    load_calls.append({"models": list(models), "inference_mode": torch.is_inference_mode_enabled(),
                       "force_full_load": force_full_load})
    for model in models:
        loaded = LoadedModel(model)
        if loaded in current_loaded_models:
            current = current_loaded_models.pop(current_loaded_models.index(loaded))
            current.currently_used = True
            current_loaded_models.insert(0, current)
            continue
        for index in reversed(range(len(current_loaded_models))):
            if model.is_clone(current_loaded_models[index].model):
                current_loaded_models.pop(index).model_unload()
        loaded.model_load(force_patch_weights=force_patch_weights)
        current_loaded_models.insert(0, loaded)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    while current_loaded_models:
        current_loaded_models.pop().model_unload()


def soft_empty_cache(force=False):
    pass
