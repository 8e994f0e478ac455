"""modules/sd_models_xl.py: what A1111 adds to sgm's DiffusionEngine/GeneralConditioner.

``get_learned_conditioning(batch)`` -> ``{'crossattn': (B, 77k, C_l+C_g), 'vector': (B, adm)}``
with original/target size = (height, width) of the batch (default 1024) and
crop = (opts.sdxl_crop_top, opts.sdxl_crop_left); ``apply_model(x, t, cond)``
-> ``self.model(x, t, cond)``; ``get_first_stage_encoding(x)`` returns x
(``encode_first_stage`` already scaled). ``extend_sdxl(model)`` sets
``parameterization``, ``alphas_cumprod`` (a plain fp32 tensor on
``devices.device``, not a buffer) and ``conditioner.wrapped``.
"""

from __future__ import annotations

import torch

from modules import devices, shared

import standin_models


def get_learned_conditioning(self, batch):
    for embedder in self.conditioner.embedders:
        embedder.ucg_rate = 0.0

    width = getattr(batch, 'width', 1024) or 1024
    height = getattr(batch, 'height', 1024) or 1024
    is_negative_prompt = getattr(batch, 'is_negative_prompt', False)
    aesthetic_score = shared.opts.sdxl_refiner_low_aesthetic_score if is_negative_prompt else shared.opts.sdxl_refiner_high_aesthetic_score

    devices_args = dict(device=devices.device, dtype=devices.dtype)

    sdxl_conds = {
        "txt": batch,
        "original_size_as_tuple": torch.tensor([height, width], **devices_args).repeat(len(batch), 1),
        "crop_coords_top_left": torch.tensor([shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left], **devices_args).repeat(len(batch), 1),
        "target_size_as_tuple": torch.tensor([height, width], **devices_args).repeat(len(batch), 1),
        "aesthetic_score": torch.tensor([aesthetic_score], **devices_args).repeat(len(batch), 1),
    }

    force_zero_negative_prompt = is_negative_prompt and all(x == '' for x in batch)
    c = self.conditioner(sdxl_conds, force_zero_embeddings=['txt'] if force_zero_negative_prompt else [])

    return c


def apply_model(self, x, t, cond):
    if self.is_sdxl_inpaint:
        x = torch.cat([x] + cond['c_concat'], dim=1)

    return self.model(x, t, cond)


def get_first_stage_encoding(self, x):
    return x


standin_models.DiffusionEngine.get_learned_conditioning = get_learned_conditioning
standin_models.DiffusionEngine.apply_model = apply_model
standin_models.DiffusionEngine.get_first_stage_encoding = get_first_stage_encoding


def encode_embedding_init_text(self, init_text, nvpt):
    res = []

    for embedder in [embedder for embedder in self.embedders if hasattr(embedder, 'encode_embedding_init_text')]:
        encoded = embedder.encode_embedding_init_text(init_text, nvpt)
        res.append(encoded)

    return torch.cat(res, dim=1)


def tokenize(self, texts):
    for embedder in [embedder for embedder in self.embedders if hasattr(embedder, 'tokenize')]:
        return embedder.tokenize(texts)

    raise AssertionError('no tokenizer available')


def process_texts(self, texts):
    for embedder in [embedder for embedder in self.embedders if hasattr(embedder, 'process_texts')]:
        return embedder.process_texts(texts)


def get_target_prompt_token_count(self, token_count):
    for embedder in [embedder for embedder in self.embedders if hasattr(embedder, 'get_target_prompt_token_count')]:
        return embedder.get_target_prompt_token_count(token_count)


standin_models.GeneralConditioner.encode_embedding_init_text = encode_embedding_init_text
standin_models.GeneralConditioner.tokenize = tokenize
standin_models.GeneralConditioner.process_texts = process_texts
standin_models.GeneralConditioner.get_target_prompt_token_count = get_target_prompt_token_count


def extend_sdxl(model):
    dtype = next(model.model.diffusion_model.parameters()).dtype
    model.model.diffusion_model.dtype = dtype
    model.model.conditioning_key = 'crossattn'
    model.cond_stage_key = 'txt'

    model.parameterization = "v" if isinstance(model.denoiser.scaling, standin_models.VScaling) else "eps"

    _, alphas_cumprod = standin_models._ddpm_schedule(1000)
    model.alphas_cumprod = torch.asarray(alphas_cumprod, device=devices.device, dtype=torch.float32)

    model.conditioner.wrapped = torch.nn.Module()
