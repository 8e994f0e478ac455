"""``backend.patcher.base``: ``ModelPatcher`` (model, devices, LoRA patches, model options, clones)."""

import copy

from backend import memory_management
from backend.patcher.lora import LoraLoader, get_attr, set_attr_raw


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None, **kwargs):
        self.size = size
        self.model = model
        self.lora_patches = {}
        self.object_patches = {}
        self.object_patches_backup = {}
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader
        self.current_device = offload_device if current_device is None else current_device

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        identifier = (filename, strength_patch, strength_model, online_mode)
        keys = set(k for k, _ in self.model.named_parameters())
        self.lora_patches[identifier] = {k: [[strength_patch, v, strength_model, None, None]]
                                         for k, v in patches.items() if k in keys}
        return set(self.lora_patches[identifier])

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape=input_shape)

    def model_size(self):
        return memory_management.module_size(self.model)

    def forge_patch_model(self, target_device=None):
        for key, item in self.object_patches.items():
            self.object_patches_backup.setdefault(key, get_attr(self.model, key))
            set_attr_raw(self.model, key, item)
        if target_device is not None:
            self.model.to(target_device)
            self.current_device = target_device
        return self.model

    def forge_unpatch_model(self, target_device=None):
        if target_device is not None:
            self.model.to(target_device)
            self.current_device = target_device
        for key, item in self.object_patches_backup.items():
            set_attr_raw(self.model, key, item)
        self.object_patches_backup = {}
