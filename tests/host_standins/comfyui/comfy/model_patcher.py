"""``comfy.model_patcher.ModelPatcher``: a model plus patches, shared between clones.

As in ComfyUI: ``ModelPatcher(model, load_device, offload_device, size=0, weight_inplace_update=False)``;
``clone()`` shares ``model`` (and the weight ``backup``) and copies patches, object patches and
``model_options`` (``{"transformer_options": {}}``); ``add_patches(patches, strength_patch=1.0,
strength_model=1.0)`` records weight patches by key (here: a tensor added times the strength);
``add_object_patch(name, obj)``; ``get_model_object(name)`` gives the object patch, else the
model's attribute; ``patch_model(device_to=None, lowvram_model_memory=0, load_weights=True,
force_patch_weights=False)`` sets object patches and replaces each patched weight by a new
``Parameter(requires_grad=False)`` computed in float32, keeping the original in ``backup``
(``comfy.utils.set_attr_param``); ``unpatch_model(device_to=None, unpatch_weights=True)`` puts the
originals back. Patching happens under whatever grad/inference mode the caller is in (ComfyUI:
inference mode).
"""

import uuid

import torch

import comfy.model_management
import comfy.utils


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.object_patches_backup = {}
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        self.patches_uuid = uuid.uuid4()
        self.parent = None
        self.is_clip = False
        if not hasattr(self.model, "device") or self.model.device is None:
            self.model.device = offload_device
        if not hasattr(self.model, "current_weight_patches_uuid"):
            self.model.current_weight_patches_uuid = None

    def model_size(self):
        if self.size == 0:
            self.size = comfy.model_management.module_size(self.model)
        return self.size

    def clone(self):
        n = self.__class__(self.model, self.load_device, self.offload_device, self.size,
                           weight_inplace_update=self.weight_inplace_update)
        n.patches = {key: list(value) for key, value in self.patches.items()}
        n.patches_uuid = self.patches_uuid
        n.object_patches = self.object_patches.copy()
        n.model_options = {"transformer_options": dict(self.model_options["transformer_options"]),
                           **{k: v for k, v in self.model_options.items() if k != "transformer_options"}}
        n.backup = self.backup
        n.object_patches_backup = self.object_patches_backup
        n.parent = self
        n.is_clip = self.is_clip
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        state = self.model.state_dict()
        added = []
        for key, value in patches.items():
            if key in state:
                added.append(key)
                self.patches.setdefault(key, []).append((strength_patch, value, strength_model))
        self.patches_uuid = uuid.uuid4()
        return added

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def get_model_object(self, name):
        if name in self.object_patches:
            return self.object_patches[name]
        if name in self.object_patches_backup:
            return self.object_patches_backup[name]
        return comfy.utils.get_attr(self.model, name)

    def model_patches_models(self):
        return []

    def model_patches_to(self, device):
        pass

    def model_dtype(self):
        if hasattr(self.model, "get_dtype"):
            return self.model.get_dtype()

    def patch_weight_to_device(self, key, device_to=None):
        if key not in self.patches:
            return
        weight = comfy.utils.get_attr(self.model, key)
        if key not in self.backup:
            self.backup[key] = weight
        out = weight.to(torch.float32, copy=True)
        for strength_patch, value, strength_model in self.patches[key]:
            out = out * strength_model + strength_patch * value.to(out)
        comfy.utils.set_attr_param(self.model, key, out.to(weight.dtype))

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        for key, obj in self.object_patches.items():
            previous = comfy.utils.set_attr(self.model, key, obj)
            self.object_patches_backup.setdefault(key, previous)
        if load_weights and self.model.current_weight_patches_uuid != self.patches_uuid:
            for key in self.patches:
                self.patch_weight_to_device(key, device_to)
            self.model.current_weight_patches_uuid = self.patches_uuid
        if device_to is not None:
            self.model.to(device_to)
            self.model.device = device_to
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if unpatch_weights:
            for key in list(self.backup):
                comfy.utils.set_attr_param(self.model, key, self.backup.pop(key))
            self.model.current_weight_patches_uuid = None
            if device_to is not None:
                self.model.to(device_to)
                self.model.device = device_to
        for key in list(self.object_patches_backup):
            comfy.utils.set_attr(self.model, key, self.object_patches_backup.pop(key))
