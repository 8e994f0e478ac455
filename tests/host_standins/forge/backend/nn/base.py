"""``backend.nn.base``: ``ModuleDict`` (children from a dict) and ``ObjectDict`` (attributes from a dict)."""

import torch


class ModuleDict(torch.nn.Module):
    def __init__(self, module_dict):
        super().__init__()
        for name, module in module_dict.items():
            self.add_module(name, module)


class ObjectDict:
    def __init__(self, object_dict):
        for name, value in object_dict.items():
            setattr(self, name, value)
