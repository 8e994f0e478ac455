"""modules/processing.py (only what decides which conditioning txt2img gets).

``process_images`` in 1.10.1 first calls
``model_hijack.embedding_db.load_textual_inversion_embeddings()`` (no force:
only a change of the embeddings folder's mtime triggers a reload), then
encodes prompts with ``sd_model.get_learned_conditioning`` under
``torch.no_grad()`` and ``devices.autocast()``. ``txt2img_conditioning``
does exactly that and returns the conditioning; no sampling.
"""

import os

import torch

from modules import devices, shared
from modules.sd_hijack import model_hijack


def txt2img_conditioning(prompts, width=512, height=512):
    if os.path.exists(shared.cmd_opts.embeddings_dir):
        model_hijack.embedding_db.load_textual_inversion_embeddings()

    class SdConditioning(list):
        pass

    batch = SdConditioning(prompts)
    batch.width, batch.height = width, height
    model_hijack.clear_comments()
    with torch.no_grad(), devices.autocast():
        return shared.sd_model.get_learned_conditioning(batch)
