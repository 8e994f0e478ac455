"""``ModelAdapter`` for ComfyUI's MODEL, CLIP and VAE, as a node receives them.

* MODEL is a ``comfy.model_patcher.ModelPatcher`` around a ``BaseModel``
  (``.model``; ``SDXL`` for SDXL): ``diffusion_model(x, timesteps, context=,
  y=, control=, transformer_options=)`` predicts the noise (or v) in the DDPM
  timestep convention, ``model_sampling`` (or the object patch that replaces
  it, such as the ModelSamplingDiscrete node's) holds the schedule as sigmas,
  ``process_latent_in`` applies the VAE scale and ``encode_adm`` builds SDXL's
  pooled + size vector. Weight patches (LoRA) are put in by ComfyUI's memory
  manager when it loads the model, so tuning sees the model the sampler sees.
* CLIP holds ``cond_stage_model`` with one ``SDClipModel`` per text encoder
  (``clip_l``; ``clip_h`` for SD2; ``clip_l`` + ``clip_g`` for SDXL) and a
  tokenizer of the same names. An ``SDClipModel`` takes token rows in which a
  tensor stands for one embedding vector: the learned vectors enter the prompt
  the very way ``embedding:NAME`` enters it at generation, and
  ``clip.layer_idx`` (CLIP Set Last Layer) applies as in ``encode_from_tokens``.
* VAE: ``first_stage_model.encode`` of ``process_input`` pixels.

ComfyUI runs every node under ``torch.inference_mode()`` and loads weights
there, so its parameters are inference tensors; ``tuning_session`` leaves
inference mode, swaps them for aliases that share their memory (as for Forge),
gives the CLIP layers' norms a copy of their input (``CLIPLayer`` adds its
residuals in place, ``x += ...``, which autograd rejects), has the UNet's
attention run on PyTorch SDPA through ComfyUI's ``optimized_attention_override``
(Sage or flash attention have no backward), and puts everything back.

Nothing here imports ComfyUI at module level.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Iterator, Optional, Sequence

import torch

from ..adapter import SLOT_COUNT, ModelAdapter, ModelFamily, PromptSlots
from ..errors import BadInput, TuningFailed, UnsupportedModel
from .forge import TrainableAliases, needs_normal_tensor

#: ComfyUI's text-encoder names (``cond_stage_model.clip_<x>``) per family, in export-key order.
TEXT_ENCODERS = {ModelFamily.SD1: ("l",), ModelFamily.SD2: ("h",), ModelFamily.SDXL: ("l", "g")}
#: The VAE's downsampling factor in SD1, SD2 and SDXL.
LATENT_FACTOR = 8
_TUNABLE_MODELS = ("BaseModel", "SDXL")
_MODEL_NAMES = {"SDXLRefiner": "the SDXL refiner", "Flux": "Flux", "SD3": "Stable Diffusion 3",
                "SD15_instructpix2pix": "InstructPix2Pix", "SDXL_instructpix2pix": "InstructPix2Pix",
                "SD21UNCLIP": "SD 2.1 unCLIP", "StableCascade_C": "Stable Cascade"}


def _comfy(name: str):
    """A ComfyUI module, imported on use; None outside ComfyUI."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a host module failing at import
        return None


# ------------------------------------------------------------------ what can be tuned
def prediction_type(model_sampling) -> str:
    """"epsilon" or "v_prediction" for a discrete DDPM schedule; ``UnsupportedModel`` otherwise."""
    sampling = _comfy("comfy.model_sampling")
    kinds = [klass.__name__ for klass in type(model_sampling).__mro__]
    discrete = getattr(model_sampling, "sigmas", None) is not None and "ModelSamplingDiscrete" in kinds
    if sampling is not None:
        edm = getattr(sampling, "EDM", None)
        if edm is not None and isinstance(model_sampling, edm):
            discrete = False
    if discrete and "V_PREDICTION" in kinds:
        return "v_prediction"
    if discrete and "EPS" in kinds and "X0" not in kinds:
        return "epsilon"
    raise UnsupportedModel("this model does not use the discrete diffusion schedule Celeb Basis tunes with "
                           f"({type(model_sampling).__name__}): use an SD 1.x, SD 2.x or SDXL checkpoint with "
                           "eps or v prediction")


def comfy_family(model, clip) -> ModelFamily:
    """SD1, SD2 or SDXL from the MODEL and CLIP inputs; ``UnsupportedModel`` with a reason otherwise."""
    base = getattr(model, "model", None)
    if base is None or getattr(base, "diffusion_model", None) is None:
        raise UnsupportedModel("the MODEL input is not a loaded diffusion model: connect a checkpoint loader's MODEL")
    kind = type(base).__name__
    if kind not in _TUNABLE_MODELS:
        raise UnsupportedModel(f"{_MODEL_NAMES.get(kind, kind)} models cannot be tuned: Celeb Basis works on "
                               "Stable Diffusion 1.x, 2.x and SDXL checkpoints")
    in_channels = getattr(base.diffusion_model, "in_channels", 4)
    if in_channels != 4:
        raise UnsupportedModel(f"the model's UNet takes {in_channels} channels (an inpainting model): "
                               "load the matching base checkpoint to tune")
    stage = getattr(clip, "cond_stage_model", None)
    found = [name for name in ("clip_l", "clip_g", "clip_h") if isinstance(getattr(stage, name, None), torch.nn.Module)]
    if kind == "SDXL":
        family = ModelFamily.SDXL
    else:
        family = ModelFamily.SD2 if "clip_h" in found else ModelFamily.SD1
    wanted = [f"clip_{name}" for name in TEXT_ENCODERS[family]]
    config = getattr(getattr(base, "model_config", None), "unet_config", None) or {}
    widths = [int(getattr(stage, name).transformer.get_input_embeddings().weight.shape[1])
              for name in wanted if name in found]
    if found != wanted or config.get("context_dim") not in (None, sum(widths)):
        raise UnsupportedModel(f"the CLIP input does not belong to this {family.value.upper()} model (it has "
                               f"{', '.join(found) or 'no CLIP text encoder'}, {sum(widths)} wide; the UNet reads "
                               f"{config.get('context_dim')} wide): connect the CLIP of the same checkpoint")
    prediction_type(model.get_model_object("model_sampling"))
    return family


# ------------------------------------------------------------------ one text encoder
class _TextEncoder:
    """One ``clip_<x>`` of a ComfyUI CLIP: its ``SDClipModel``, its ``SDTokenizer``, the slot rows."""

    def __init__(self, stage, tokenizer, name: str):
        self.model = getattr(stage, f"clip_{name}")
        self.tokenizer = getattr(tokenizer, f"clip_{name}")
        self.table = self.model.transformer.get_input_embeddings()
        self.width = int(self.table.weight.shape[1])
        self._rows: dict[str, tuple[list, int]] = {}

    def ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens, cut as ``SDTokenizer.tokenize_with_weights`` cuts them."""
        tokenizer = self.tokenizer
        end = -1 if getattr(tokenizer, "tokenizer_adds_end_token", True) else None
        return list(tokenizer.tokenizer(text)["input_ids"][tokenizer.tokens_start:end]) if text else []

    def row(self, template: str, vectors: torch.Tensor) -> list:
        """The token row ``tokenize_with_weights`` makes for ``template`` with an embedding in its slot.

        The row holds ints and, in the slot, one 1-D tensor per learned vector
        (``vectors`` is (2, width)), as ``embedding:NAME`` puts its rows there.
        """
        if template not in self._rows:
            self._rows[template] = self._layout(template)
        row, start = self._rows[template]
        row = list(row)
        row[start:start + SLOT_COUNT] = [vectors[index].contiguous() for index in range(SLOT_COUNT)]
        return row

    def _layout(self, template: str) -> tuple[list, int]:
        tokenizer = self.tokenizer
        before, after = PromptSlots(template).segments
        head, tail = self.ids(before), self.ids(after)
        start = [tokenizer.start_token] if tokenizer.start_token is not None else []
        end = [tokenizer.end_token] if tokenizer.end_token is not None else []
        row = start + head + [None] * SLOT_COUNT + tail + end
        if len(row) > tokenizer.max_length:
            raise BadInput(f"the caption template {template!r} is longer than {tokenizer.max_length} tokens")
        if getattr(tokenizer, "pad_to_max_length", True):
            row += [tokenizer.pad_token] * (tokenizer.max_length - len(row))
        return row, len(start) + len(head)

    def options(self) -> tuple:
        model = self.model
        return model.layer, model.layer_idx, model.return_projected_pooled

    def set_options(self, options: tuple) -> None:
        self.model.layer, self.model.layer_idx, self.model.return_projected_pooled = options


# ------------------------------------------------------------------ the adapter
class ComfyAdapter(ModelAdapter):
    """Tune on the MODEL / CLIP / VAE a ComfyUI node was given (SD 1.x, SD 2.x, SDXL)."""

    def __init__(self, model, clip, vae, model_name: str = "", load_models: bool = True):
        self.family = comfy_family(model, clip)
        if vae is None or getattr(vae, "first_stage_model", None) is None:
            raise UnsupportedModel("the VAE input is empty: connect the checkpoint loader's VAE (or a VAE loader)")
        self.model, self.clip, self.vae = model, clip, vae
        self.base = model.model
        self.model_name = model_name
        self.load_models = load_models
        stage, tokenizer = clip.cond_stage_model, clip.tokenizer
        self.encoders = [_TextEncoder(stage, tokenizer, name) for name in TEXT_ENCODERS[self.family]]
        self.encoder_widths = tuple(encoder.width for encoder in self.encoders)
        self.prediction_type = prediction_type(self.model_sampling)

    @property
    def model_sampling(self):
        return self.model.get_model_object("model_sampling")

    # -- vocabulary -------------------------------------------------------
    def token_embedding_tables(self) -> list[torch.Tensor]:
        tables = []
        for encoder in self.encoders:
            table = encoder.table.weight.detach()
            if needs_normal_tensor(table):  # no views of inference tensors outside inference mode
                with torch.inference_mode(False):
                    table = table.clone()
            tables.append(table)
        return tables

    def tokenize(self, text: str) -> list[int]:
        return self.encoders[0].ids(text)

    # -- schedule and images ---------------------------------------------
    @property
    def device(self) -> torch.device:
        return torch.device(self.model.load_device)

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's computation dtype (``manual_cast_dtype`` when weights are stored in another)."""
        return getattr(self.base, "manual_cast_dtype", None) or self.base.get_dtype()

    def alphas_cumprod(self) -> torch.Tensor:
        sigmas = self.model_sampling.sigmas
        with torch.inference_mode(False):
            sigmas = sigmas.detach().to(self.device, torch.float32).clone()
            return 1.0 / (sigmas * sigmas + 1.0)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """What ``VAE.encode`` does, without its model loading (the session loaded the VAE already)."""
        vae = self.vae
        with torch.no_grad():
            images = vae.process_input((pixels.float() + 1.0) / 2.0)  # ComfyUI's IMAGE range is [0, 1]
            raw = vae.first_stage_model.encode(images.to(vae.device, vae.vae_dtype)).float()
            latents = self.base.process_latent_in(raw.to(self.device))
        with torch.inference_mode(False):
            latents = latents.float().clone()
        if not torch.isfinite(latents).all():
            raise TuningFailed("the VAE produced NaN for a photo: start ComfyUI with --fp32-vae or --bf16-vae, "
                               "or load another VAE")
        return latents

    # -- prompts with learned slots -----------------------------------------
    def encode_prompts(self, templates: Sequence[str], learned: torch.Tensor) -> Any:
        learned = self.batched_learned(templates, learned)
        stage = self.clip.cond_stage_model
        stage.reset_clip_options()  # as CLIP.encode_from_tokens does before every encode
        if self.clip.layer_idx is not None:
            stage.set_clip_options({"layer": self.clip.layer_idx})
        hidden, pooled, offset = [], None, 0
        for encoder in self.encoders:
            vectors = learned[..., offset:offset + encoder.width]
            rows = [encoder.row(template, vectors[index]) for index, template in enumerate(templates)]
            out = encoder.model(rows)
            hidden.append(out[0])
            pooled = out[1]
            offset += encoder.width
        length = min(h.shape[1] for h in hidden)  # as SDXLClipModel.encode_token_weights cuts them
        context = torch.cat([h[:, :length] for h in hidden], dim=-1)
        return {"context": context, "pooled": pooled if self.family == ModelFamily.SDXL else None}

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Any) -> torch.Tensor:
        dtype, device = self.dtype, self.device
        extra = {}
        if self.family == ModelFamily.SDXL:
            height, width = (side * LATENT_FACTOR for side in noisy_latents.shape[-2:])
            extra["y"] = self.base.encode_adm(pooled_output=cond["pooled"], width=width, height=height,
                                              crop_w=0, crop_h=0, target_width=width, target_height=height,
                                              device=device).to(device, dtype)
        out = self.base.diffusion_model(
            noisy_latents.to(device, dtype), timesteps.to(device).float(),
            context=cond["context"].to(device, dtype), control=None,
            transformer_options=self._transformer_options(), **extra,
        )
        return out.float()

    @staticmethod
    def _transformer_options() -> dict:
        """Fresh per call (the UNet writes into it); the attention runs on PyTorch SDPA, which has a backward."""
        attention = _comfy("comfy.ldm.modules.attention")
        pytorch = getattr(attention, "attention_pytorch", None)
        if pytorch is None:
            return {}

        def use_pytorch(func, *args, **kwargs):
            return pytorch(*args, **kwargs)

        return {"optimized_attention_override": use_pytorch}

    # -- state ---------------------------------------------------------------
    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.base, self.clip.cond_stage_model, self.vae.first_stage_model]

    def _load(self) -> None:
        """ComfyUI's memory manager puts UNet (with its weight patches), text encoders and VAE where they run."""
        memory = _comfy("comfy.model_management")
        if memory is None or not self.load_models:
            return
        patchers = [self.model, getattr(self.clip, "patcher", None), getattr(self.vae, "patcher", None)]
        with torch.inference_mode():  # as ComfyUI itself calls it
            memory.load_models_gpu([p for p in patchers if p is not None])

    def _copy_norm_inputs(self, guard) -> None:
        """``CLIPLayer`` adds residuals in place after its norms saved their input: each norm gets a copy."""

        def copy_input(module, args):
            if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
                return (args[0].clone(),) + tuple(args[1:])
            return None

        handles = []
        for encoder in self.encoders:
            for module in encoder.model.modules():
                if hasattr(module, "self_attn") and hasattr(module, "mlp"):
                    for name in ("layer_norm1", "layer_norm2"):
                        norm = getattr(module, name, None)
                        if isinstance(norm, torch.nn.Module):
                            handles.append(norm.register_forward_pre_hook(copy_input))

        def remove():
            for handle in handles:
                handle.remove()

        guard.on_exit(remove)

    def _keep_clip_options(self, guard) -> None:
        """The text encoders' layer options (set per encode) are left as they were found."""
        saved = [(encoder, encoder.options()) for encoder in self.encoders]
        guard.on_exit(lambda: [encoder.set_options(options) for encoder, options in saved])

    @contextlib.contextmanager
    def tuning_session(self) -> Iterator[None]:
        """Load, swap inference tensors for aliases, then freeze/patch under a guard; undo in reverse."""
        from ..model_guard import ModelStateGuard

        with torch.inference_mode(False):
            self._load()
            aliases = TrainableAliases(self.frozen_modules()).apply()
            try:
                with ModelStateGuard(self.frozen_modules()) as guard:
                    self._keep_clip_options(guard)
                    guard.freeze()
                    self._copy_norm_inputs(guard)
                    with torch.enable_grad():
                        yield
            finally:
                aliases.restore()
                memory = _comfy("comfy.model_management")
                if memory is not None and hasattr(memory, "soft_empty_cache"):
                    memory.soft_empty_cache()
