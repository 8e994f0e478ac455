"""``modules/devices.py`` of Forge main / Neo, reduced: the device comes from ``backend.memory_management``
and ``torch_gc()`` is its ``soft_empty_cache()``."""

import contextlib

import torch

cpu = torch.device("cpu")
device = cpu
dtype = torch.float32


def torch_gc():
    from backend import memory_management

    memory_management.soft_empty_cache()


def autocast(disable=False):
    return contextlib.nullcontext()
