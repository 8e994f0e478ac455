"""``ModelAdapter`` for the model AUTOMATIC1111 1.10 has loaded (``shared.sd_model``).

No second copy of the model: prompts go through the host's own text-encoder
wrappers (``encode_with_transformers``, so clip skip and layer choice are the
ones txt2img uses) with the two learned vectors written into the output of the
real ``nn.Embedding`` (``token_embedding.wrapped``) at the slot positions by a
forward hook that exists only for that call; the noise prediction is the
host's ``apply_model`` (which casts to the UNet dtype under the host's
autocast).

* SD1: ``cond_stage_model`` = ``FrozenCLIPEmbedderWithCustomWords``.
* SD2: ``FrozenOpenCLIPEmbedderWithCustomWords``; 768-v models predict v.
* SDXL: the conditioner's CLIP-L and bigG wrappers are called directly (its
  own forward would run them under ``no_grad``); the ``vector`` is bigG's
  pooled output plus the size embedders' output for (h, w, 0, 0, h, w).

``tuning_session`` freezes everything through ``ModelStateGuard``, switches
the host's cross-attention optimisation off while training unless the
host's "Use cross attention optimizations while training" option (or the
adapter's argument) keeps it, holds the parts it uses on the GPU under
--medvram with the host's swap hooks suspended, and puts every bit back. It
refuses --lowvram, FP8 weight storage, inpainting/instruct models and the
SDXL refiner up front with a message. Nothing here imports ldm or sgm, and the
host's ``modules`` are imported only inside functions.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Iterator, Optional, Sequence

import torch

from ..adapter import NATIVE_RESOLUTION, ModelAdapter, ModelFamily, spliced_slots, webui_chunk
from ..errors import TuningFailed, UnsupportedModel

#: Token id put in the two slots before the hook overwrites their rows (A1111
#: uses 0 for embedding positions too); never the end token, which pooling finds.
PLACEHOLDER_ID = 0
#: The VAE's downsampling factor in SD1, SD2 and SDXL.
LATENT_FACTOR = 8
SIZE_KEYS = ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")


def _host():
    """The host's modules, imported on use (they exist only inside the WebUI or its stand-in)."""
    from modules import devices, lowvram, sd_hijack, shared

    return shared, devices, lowvram, sd_hijack


def _first_param(module: torch.nn.Module) -> Optional[torch.nn.Parameter]:
    return next(module.parameters(), None)


def _real_token_embedding(embedder) -> torch.nn.Embedding:
    """The ``nn.Embedding`` inside one of A1111's text-encoder wrappers (below ``EmbeddingsWithFixes``)."""
    inner = getattr(embedder, "wrapped", None)
    if inner is None:
        raise UnsupportedModel(f"the text encoder {type(embedder).__name__} is not one A1111 wraps for embeddings")
    if hasattr(inner, "transformer"):  # ldm/sgm FrozenCLIPEmbedder (transformers CLIPTextModel)
        transformer = getattr(inner.transformer, "text_model", inner.transformer)
        table = transformer.embeddings.token_embedding
    elif hasattr(inner, "model") and hasattr(inner.model, "token_embedding"):  # OpenCLIP (SD2, SDXL bigG)
        table = inner.model.token_embedding
    else:
        raise UnsupportedModel(
            f"the text encoder {type(inner).__name__} is not supported "
            "(only CLIP and OpenCLIP, as in SD1, SD2 and SDXL)"
        )
    table = getattr(table, "wrapped", table)
    if not isinstance(table, torch.nn.Embedding):
        raise UnsupportedModel(f"unexpected token embedding {type(table).__name__} in {type(inner).__name__}")
    return table


def _detect_family(sd_model) -> ModelFamily:
    if getattr(sd_model, "is_sd3", False):
        raise UnsupportedModel("Stable Diffusion 3 models cannot be tuned: use an SD1.x, SD2.x or SDXL base model")
    if getattr(sd_model, "is_sdxl", False) or hasattr(sd_model, "conditioner"):
        return ModelFamily.SDXL
    if getattr(sd_model, "is_sd2", False):
        return ModelFamily.SD2
    return ModelFamily.SD1


def _text_embedders(sd_model, family: ModelFamily) -> list:
    """A1111's text-encoder wrappers, in conditioning order (SDXL: CLIP-L, then bigG)."""
    if family != ModelFamily.SDXL:
        embedder = getattr(sd_model, "cond_stage_model", None)
        if embedder is None or not hasattr(embedder, "encode_with_transformers"):
            raise UnsupportedModel(
                "the loaded model's text encoder is not wrapped by A1111 (is the model fully loaded?)"
            )
        return [embedder]
    embedders = [e for e in sd_model.conditioner.embedders if hasattr(e, "encode_with_transformers")]
    has_clip_l = any(hasattr(getattr(e, "wrapped", None), "transformer") for e in embedders)
    if not has_clip_l:
        raise UnsupportedModel(
            "this is an SDXL refiner (it has no CLIP-L text encoder): load the SDXL base model to tune an identity"
        )
    if len(embedders) != 2:
        raise UnsupportedModel(f"expected SDXL's two text encoders, found {len(embedders)}")
    return embedders


class A1111Adapter(ModelAdapter):
    """Tune on AUTOMATIC1111's loaded model (``shared.sd_model`` unless one is given)."""

    def __init__(
        self,
        sd_model=None,
        *,
        keep_attention_optimizations: Optional[bool] = None,
        gradient_checkpointing: bool = False,
        resolution: Optional[int] = None,
    ):
        shared, *_ = _host()
        if sd_model is None:
            sd_model = shared.sd_model  # loads the default checkpoint if none was loaded yet, as txt2img would
        if sd_model is None:
            raise UnsupportedModel("no Stable Diffusion model is loaded: choose a checkpoint in the WebUI first")
        self.sd_model = sd_model
        self.family = _detect_family(sd_model)
        self.keep_attention_optimizations = keep_attention_optimizations
        self.gradient_checkpointing = gradient_checkpointing
        self._resolution = resolution
        self.check_supported()
        self.text_embedders = _text_embedders(sd_model, self.family)
        self._tables = [_real_token_embedding(e) for e in self.text_embedders]
        self.encoder_widths = tuple(int(t.weight.shape[1]) for t in self._tables)
        self.prediction_type = "v_prediction" if getattr(sd_model, "parameterization", "eps") == "v" else "epsilon"
        info = getattr(sd_model, "sd_checkpoint_info", None)
        self.model_name = getattr(info, "model_name", None) or getattr(info, "name_for_extra", None) or ""
        self.model_hash = getattr(sd_model, "sd_model_hash", None) or ""

    # -- what cannot be tuned -----------------------------------------------
    def check_supported(self) -> None:
        """Raise ``UnsupportedModel`` with a user-facing reason for setups tuning cannot run on."""
        shared, devices, _, _ = _host()
        model = self.sd_model
        if getattr(shared.cmd_opts, "lowvram", False):
            raise UnsupportedModel(
                "tuning is not possible with --lowvram (A1111's own embedding training refuses it too): "
                "restart the WebUI with --medvram, or without either flag"
            )
        unet = model.model.diffusion_model
        weight = _first_param(unet)
        if weight is None or weight.device.type == "meta":
            raise UnsupportedModel("the model's weights are not loaded (it was unloaded to free memory): load it again")
        if getattr(devices, "fp8", False) or any(
            p.dtype in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None))
            for p in unet.parameters()
        ):
            raise UnsupportedModel(
                "the model's weights are stored in FP8 (Settings > Optimizations > FP8 weight): "
                "set it to Disable and reload the model to tune, then switch it back"
            )
        in_channels = getattr(unet, "in_channels", None)
        conditioning_key = getattr(model.model, "conditioning_key", "crossattn")
        if (in_channels not in (None, 4) or conditioning_key in ("hybrid", "concat", "hybrid-adm")
                or getattr(model, "is_sdxl_inpaint", False) or getattr(model, "cond_stage_key", "txt") == "edit"):
            raise UnsupportedModel(
                f"the loaded model is an inpainting or instruct model (its UNet takes {in_channels} channels): "
                "load the matching base checkpoint to tune an identity"
            )
        if self.family == ModelFamily.SDXL:
            _text_embedders(model, self.family)

    # -- vocabulary -------------------------------------------------------
    def token_embedding_tables(self) -> list[torch.Tensor]:
        return [table.weight.detach() for table in self._tables]

    def tokenize(self, text: str) -> list[int]:
        return list(self.text_embedders[0].tokenize([text])[0])

    # -- schedule and images ---------------------------------------------
    @property
    def device(self) -> torch.device:
        _, devices, _, _ = _host()
        return torch.device(devices.device)

    @property
    def dtype(self) -> torch.dtype:
        return _first_param(self.sd_model.model.diffusion_model).dtype

    @property
    def resolution(self) -> int:
        return self._resolution or NATIVE_RESOLUTION[self.family]

    def alphas_cumprod(self) -> torch.Tensor:
        # alphas_cumprod_original: the training schedule, before A1111's downcast / zero-SNR overrides
        alphas = getattr(self.sd_model, "alphas_cumprod_original", None)
        if alphas is None:
            alphas = self.sd_model.alphas_cumprod
        return alphas.detach().to(self.device, torch.float32)

    def _encode_with_host(self, pixels: torch.Tensor) -> torch.Tensor:
        model = self.sd_model
        encoded = model.encode_first_stage(pixels)
        if not isinstance(encoded, torch.Tensor) and hasattr(encoded, "mode"):
            encoded = encoded.mode()  # the posterior's mean: A1111's "deterministic" latent sampling
        return model.get_first_stage_encoding(encoded)

    def _encode_fp32(self, pixels: torch.Tensor) -> torch.Tensor:
        """The posterior mean from a float32 copy of the VAE encoder (the host's VAE stays as it is)."""
        import copy

        vae = self.sd_model.first_stage_model
        encoder = copy.deepcopy(vae.encoder).float()
        quant_conv = copy.deepcopy(vae.quant_conv).float()
        moments = quant_conv(encoder(pixels.float()))
        return self.sd_model.scale_factor * torch.chunk(moments, 2, dim=1)[0]

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vae_dtype = _first_param(self.sd_model.first_stage_model).dtype
        pixels = pixels.to(self.device, vae_dtype)
        latents = self._encode_with_host(pixels)
        if not torch.isfinite(latents).all():
            if vae_dtype == torch.float32:
                raise TuningFailed("the VAE produced NaN for a photo even in float32; try another photo or VAE")
            latents = self._encode_fp32(pixels)  # fp16 VAEs (SDXL's original) overflow
        return latents.float().to(self.device)

    # -- prompts with learned slots -----------------------------------------
    def encode_prompts(self, templates: Sequence[str], learned: torch.Tensor) -> Any:
        _, devices, _, sd_hijack = _host()
        learned = self.batched_learned(templates, learned)
        hidden, pooled, offset = [], None, 0
        with devices.autocast():
            for embedder, table, width in zip(self.text_embedders, self._tables, self.encoder_widths):
                rows = [webui_chunk(embedder, template, PLACEHOLDER_ID) for template in templates]
                tokens = torch.tensor([row[0] for row in rows], device=table.weight.device)
                with spliced_slots(table, learned[..., offset:offset + width], [row[1] for row in rows]):
                    getattr(embedder, "hijack", sd_hijack.model_hijack).fixes = None  # no stale prompt-embedding fixes
                    z = embedder.encode_with_transformers(tokens)
                pooled = getattr(z, "pooled", pooled)
                hidden.append(z)
                offset += width
        crossattn = hidden[0] if len(hidden) == 1 else torch.cat(hidden, dim=2)
        return {"crossattn": crossattn, "pooled": pooled if self.family == ModelFamily.SDXL else None}

    def _size_vector(self, batch: int, height: int, width: int) -> torch.Tensor:
        """SDXL's size conditioning for (height, width), crop (0, 0), from the model's own embedders."""
        values = {"original_size_as_tuple": (height, width), "crop_coords_top_left": (0, 0),
                  "target_size_as_tuple": (height, width)}
        parts = []
        with torch.no_grad():
            for embedder in self.sd_model.conditioner.embedders:
                key = getattr(embedder, "input_key", None)
                if key == "txt":
                    continue
                if key not in values:
                    raise UnsupportedModel(
                        f"unexpected SDXL conditioning input {key!r} (only base SDXL models are supported)"
                    )
                value = torch.tensor([values[key]], device=self.device, dtype=torch.float32).repeat(batch, 1)
                parts.append(embedder(value))
        return torch.cat(parts, dim=1)

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Any) -> torch.Tensor:
        model = self.sd_model
        if self.family == ModelFamily.SDXL:
            batch, height, width = noisy_latents.shape[0], noisy_latents.shape[-2], noisy_latents.shape[-1]
            size = self._size_vector(batch, height * LATENT_FACTOR, width * LATENT_FACTOR).to(cond["pooled"].device)
            vector = torch.cat([cond["pooled"], size.to(cond["pooled"].dtype)], dim=1)
            # a fresh dict: A1111's apply_model casts the dict's values in place
            out = model.apply_model(noisy_latents, timesteps, {"crossattn": cond["crossattn"], "vector": vector})
        else:
            out = model.apply_model(noisy_latents, timesteps, cond["crossattn"])
        return out.float()

    # -- state ---------------------------------------------------------------
    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.sd_model]

    def _medvram(self) -> bool:
        shared, _, lowvram, _ = _host()
        return bool(getattr(self.sd_model, "lowvram", False)) and lowvram.is_enabled(self.sd_model) \
            and not getattr(shared.cmd_opts, "lowvram", False)

    def _hold_on_device(self, guard) -> None:
        """--medvram: suspend the host's swap hooks and keep the text encoders and UNet on the GPU.

        The hooks would move one part to the CPU while the autograd graph still
        needs it on the GPU. Parameter devices come back through the guard;
        buffers, hooks and ``lowvram.module_in_gpu`` are restored here.
        """
        _, devices, lowvram, _ = _host()
        model = self.sd_model
        suspended = []
        for module in model.modules():
            hooks = module._forward_pre_hooks
            keys = [key for key, hook in hooks.items() if getattr(hook, "__name__", "") == "send_me_to_gpu"]
            if keys:
                suspended.append((module, OrderedDict(hooks)))
                for key in keys:
                    del hooks[key]
        buffers = [(module, name, buffer) for module in model.modules()
                   for name, buffer in module._buffers.items() if buffer is not None]
        previous_in_gpu = lowvram.module_in_gpu

        def restore():
            for module, name, buffer in buffers:
                module._buffers[name] = buffer
            for module, hooks in suspended:
                module._forward_pre_hooks.clear()
                module._forward_pre_hooks.update(hooks)
            lowvram.module_in_gpu = previous_in_gpu

        guard.on_exit(restore)
        lowvram.module_in_gpu = None  # the VAE's encode wrapper then moves only the VAE
        text_parts = [model.conditioner] if self.family == ModelFamily.SDXL else [model.cond_stage_model]
        for part in text_parts + [model.model]:
            part.to(devices.device)

    @contextlib.contextmanager
    def tuning_session(self) -> Iterator[None]:
        from ..model_guard import ModelStateGuard

        shared, _, _, sd_hijack = _host()
        self.check_supported()
        with ModelStateGuard(self.frozen_modules()) as guard:
            guard.freeze()
            keep = self.keep_attention_optimizations
            if keep is None:
                keep = bool(getattr(shared.opts, "training_xattention_optimizations", False))
            if not keep:
                sd_hijack.undo_optimizations()
                guard.on_exit(sd_hijack.model_hijack.apply_optimizations)
            if self.gradient_checkpointing and self.family != ModelFamily.SDXL:
                from modules import sd_hijack_checkpoint

                if not sd_hijack_checkpoint.stored:
                    sd_hijack_checkpoint.add()
                    guard.on_exit(sd_hijack_checkpoint.remove)
            if self._medvram():
                self._hold_on_device(guard)
            with torch.inference_mode(False), torch.enable_grad():
                yield
