"""ComfyUI's IMAGE type (float tensor, batch x height x width x RGB, values 0-1) to and from what the engine reads."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import BadInput


def image_batch_to_arrays(images) -> list[np.ndarray]:
    """Each image of an IMAGE batch as an HxWx3 uint8 array (alpha dropped, values rounded)."""
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) == 3:
        images, shape = images[None], (1, *shape)
    if len(shape) != 4 or shape[-1] not in (3, 4) or shape[0] < 1:
        raise BadInput(f"expected an IMAGE batch (images x height x width x RGB), got a tensor of shape {shape}")
    array = images[..., :3].detach().float().cpu().clamp(0, 1).numpy()
    return [np.ascontiguousarray(np.round(image * 255.0).astype(np.uint8)) for image in array]


def arrays_to_image_batch(arrays: Sequence[np.ndarray]):
    """Same-size HxWx3 uint8 arrays (or PIL images) as one IMAGE batch."""
    import torch

    stacked = np.stack([np.asarray(array, dtype=np.uint8) for array in arrays]).astype(np.float32) / 255.0
    return torch.from_numpy(stacked)
