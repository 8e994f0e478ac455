"""``backend.patcher.lora``: ``LoraLoader`` merges LoRA weights into the model, in place of its parameters.

As in Forge: ``refresh`` (under ``torch.inference_mode``) puts the backed-up
original ``Parameter`` objects back, then replaces each patched one by a new
``Parameter`` holding the merged weight; nothing happens when the set of
patches did not change (``loaded_hash``). Patches here are plain deltas.
"""

import torch


def get_attr(obj, attr):
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr_raw(obj, attr, value):
    names = attr.split(".")
    for name in names[:-1]:
        obj = getattr(obj, name)
    setattr(obj, names[-1], value)


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup = {}
        self.loaded_hash = str([])

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=torch.device("cpu"), force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        for key, weight in self.backup.items():
            set_attr_raw(self.model, key, weight)
        self.backup = {}
        for (filename, strength_patch, strength_model, online), patches in lora_patches.items():
            for key, deltas in patches.items():
                weight = get_attr(self.model, key)
                if key not in self.backup:
                    self.backup[key] = weight
                merged = weight.detach().clone()
                for strength, delta, *_ in deltas:
                    merged += strength * delta.to(merged)
                set_attr_raw(self.model, key, torch.nn.Parameter(merged, requires_grad=False))
        self.loaded_hash = hashes
