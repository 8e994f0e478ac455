"""``ModelAdapter`` for a diffusers pipeline (standalone CLI, SD.Next).

The learned vectors enter through a forward hook on each text encoder's token
embedding: the prompt is tokenised around its ``{}`` slot, two placeholder
ids stand in the slot, and the hook overwrites their embedding rows with the
learned vectors. No vocabulary entry is added, and the hook is removed when
the tuning session ends.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch

from .adapter import SLOT_COUNT, ModelAdapter, ModelFamily, PromptSlots
from .errors import UnsupportedModel



def detect_family(pipe) -> ModelFamily:
    """SD1, SD2 or SDXL from the pipeline's parts; refuse what we cannot tune."""
    unet = getattr(pipe, "unet", None)
    if unet is None or getattr(pipe, "vae", None) is None:
        raise UnsupportedModel("this model has no UNet/VAE: only Stable Diffusion 1.x, 2.x and SDXL can be tuned")
    if unet.config.in_channels != 4:
        raise UnsupportedModel(
            f"this looks like an inpainting or other special model (UNet takes {unet.config.in_channels} channels); "
            "tune on the base checkpoint instead"
        )
    if getattr(pipe, "text_encoder_2", None) is not None:
        if getattr(pipe, "text_encoder", None) is None:
            raise UnsupportedModel("this is an SDXL refiner (no CLIP-L text encoder); tune on the SDXL base model")
        return ModelFamily.SDXL
    encoder = getattr(pipe, "text_encoder", None)
    if encoder is None:
        raise UnsupportedModel("this model has no text encoder")
    config = encoder.config
    if config.hidden_size == 1024 or config.hidden_act == "gelu":
        return ModelFamily.SD2
    return ModelFamily.SD1


class DiffusersAdapter(ModelAdapter):
    """Tune on a ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``."""

    def __init__(self, pipe, model_name: str = ""):
        self.pipe = pipe
        self.family = detect_family(pipe)
        self.model_name = model_name
        self.encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if self.family == ModelFamily.SDXL else [])
        self.tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if self.family == ModelFamily.SDXL else [])
        self.encoder_widths = tuple(enc.get_input_embeddings().weight.shape[1] for enc in self.encoders)
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        self._slot_state: dict[str, Any] = {}
        self._slot_cache: dict[tuple[int, str], tuple[list[int], int]] = {}
        self.gradient_checkpointing = False
        # Step-cost options the benchmark measures (off by default: on the hardware measured so far neither
        # paid for itself within a preset's steps; see the README's Speed section).
        self.channels_last = False
        self.compile_unet = False
        self._compiled_unet = None
        self._session_dtype = None

    # -- vocabulary -------------------------------------------------------
    def token_embedding_tables(self) -> list[torch.Tensor]:
        return [enc.get_input_embeddings().weight.detach() for enc in self.encoders]

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizers[0](text, add_special_tokens=False).input_ids)

    # -- schedule and images ---------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    @property
    def dtype(self) -> torch.dtype:
        # diffusers' ``unet.dtype`` walks every submodule (~1.3 ms on a tiny UNet, ~5 ms on SD1.5): read once
        # per tuning session, where it cannot change, instead of twice per step
        return self._session_dtype or self.pipe.unet.dtype

    @property
    def resolution(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    def alphas_cumprod(self) -> torch.Tensor:
        return self.pipe.scheduler.alphas_cumprod.to(self.device, torch.float32)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        pixels = pixels.to(vae.device, vae.dtype)
        latents = vae.encode(pixels).latent_dist.mean
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents.float() - shift) * vae.config.scaling_factor).to(self.device)

    # -- prompts with learned slots -----------------------------------------
    def _slot_ids(self, tokenizer, template: str) -> tuple[list[int], int]:
        """Token ids of the template with two placeholder ids in the slot, and the slot's index (cached)."""
        key = (id(tokenizer), template)
        if key not in self._slot_cache:
            self._slot_cache[key] = self._tokenize_slots(tokenizer, template)
        return self._slot_cache[key]

    @staticmethod
    def _tokenize_slots(tokenizer, template: str) -> tuple[list[int], int]:
        before, after = PromptSlots(template).segments
        head = tokenizer(before, add_special_tokens=False).input_ids if before else []
        tail = tokenizer(after, add_special_tokens=False).input_ids if after else []
        limit = tokenizer.model_max_length
        placeholder = tokenizer.bos_token_id  # never pooled; its row is overwritten
        ids = [tokenizer.bos_token_id] + head + [placeholder] * SLOT_COUNT + tail
        ids = ids[: limit - 1] + [tokenizer.eos_token_id]
        ids += [tokenizer.pad_token_id] * (limit - len(ids))
        return ids, 1 + len(head)

    def _splice_hook(self, encoder_index: int):
        def hook(module, inputs, output):
            state = self._slot_state.get("active")
            if state is None:
                return output
            learned, starts = state["learned"], state["starts"]
            offset = sum(self.encoder_widths[:encoder_index])
            width = self.encoder_widths[encoder_index]
            vectors = learned[..., offset : offset + width].to(output.dtype)
            output = output.clone()
            for row, start in enumerate(starts):
                output[row, start : start + SLOT_COUNT] = vectors[row]
            return output

        return hook

    @contextlib.contextmanager
    def _spliced(self, learned: torch.Tensor, starts: list[int]) -> Iterator[None]:
        handles = [
            enc.get_input_embeddings().register_forward_hook(self._splice_hook(index))
            for index, enc in enumerate(self.encoders)
        ]
        self._slot_state["active"] = {"learned": learned, "starts": starts}
        try:
            yield
        finally:
            self._slot_state.pop("active", None)
            for handle in handles:
                handle.remove()

    def encode_prompts(self, templates: Sequence[str], learned: torch.Tensor) -> Any:
        batch = len(templates)
        if learned.dim() == 2:
            learned = learned.unsqueeze(0).expand(batch, -1, -1)
        hidden, pooled = [], None
        for index, (encoder, tokenizer) in enumerate(zip(self.encoders, self.tokenizers)):
            rows = [self._slot_ids(tokenizer, template) for template in templates]
            ids = torch.tensor([row[0] for row in rows], device=encoder.device)
            with self._spliced(learned, [row[1] for row in rows]):
                out = encoder(ids, output_hidden_states=self.family == ModelFamily.SDXL)
            if self.family == ModelFamily.SDXL:
                hidden.append(out.hidden_states[-2])
                if index == 1:
                    pooled = out[0]
            else:
                hidden.append(out[0])
        return {"context": torch.cat(hidden, dim=-1), "pooled": pooled}

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Any) -> torch.Tensor:
        unet, dtype = self.pipe.unet, self.dtype
        context = cond["context"].to(dtype)
        extra = None
        if self.family == ModelFamily.SDXL:
            size = self.resolution
            time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=self.device, dtype=dtype)
            batch = noisy_latents.shape[0]
            extra = {"text_embeds": cond["pooled"].to(dtype), "time_ids": time_ids.expand(batch, -1)}
        if self.compile_unet:
            if self._compiled_unet is None or self._compiled_unet._orig_mod is not unet:
                self._compiled_unet = torch.compile(unet)  # a wrapper: the pipeline's UNet is not replaced
            unet = self._compiled_unet
        return unet(noisy_latents.to(dtype), timesteps, encoder_hidden_states=context,
                    added_cond_kwargs=extra).sample

    # -- state ---------------------------------------------------------------
    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.pipe.unet, self.pipe.vae, *self.encoders]

    @contextlib.contextmanager
    def tuning_session(self) -> Iterator[None]:
        """Freeze everything; switch on UNet gradient checkpointing when asked, and back."""
        from .model_guard import ModelStateGuard

        unet = self.pipe.unet
        with ModelStateGuard(self.frozen_modules()) as guard:
            guard.freeze()
            outer_dtype, self._session_dtype = self._session_dtype, unet.dtype
            guard.on_exit(lambda: setattr(self, "_session_dtype", outer_dtype))
            if self.gradient_checkpointing and getattr(unet, "_supports_gradient_checkpointing", False):
                flags = {m: m.gradient_checkpointing for m in unet.modules() if hasattr(m, "gradient_checkpointing")}
                unet.enable_gradient_checkpointing()

                def restore_checkpointing():
                    for module, flag in flags.items():
                        module.gradient_checkpointing = flag

                guard.on_exit(restore_checkpointing)
            if self.channels_last:
                convolutions = [p for p in unet.parameters() if p.dim() == 4]
                if all(p.is_contiguous() for p in convolutions):  # else the user chose a layout: keep it
                    unet.to(memory_format=torch.channels_last)
                    guard.on_exit(lambda: unet.to(memory_format=torch.contiguous_format))
            yield
