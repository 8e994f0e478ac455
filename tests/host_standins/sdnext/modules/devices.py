"""``modules.devices`` of SD.Next: ``device`` (set at start-up), ``cpu``, ``dtype``, ``inference_context``."""

import torch

cpu = torch.device("cpu")
device = cpu
dtype = torch.float32
inference_context = torch.no_grad
