"""``ModelAdapter`` for the model Forge (lllyasviel main) or Forge Neo has loaded.

Forge builds its own engine (``backend.diffusion_engine``): ``sd_model`` is a
``StableDiffusion`` (SD1), ``StableDiffusion2`` (Forge main only) or
``StableDiffusionXL`` whose parts sit in ``sd_model.forge_objects_original``
(the objects without LoRA patches):

* prompts go through the loaded model's own text engines
  (``text_processing_engine`` or ``_l`` + ``_g``), i.e. their
  ``encode_with_transformers`` with the clip skip, layer norm and pooled
  projection txt2img uses; the two learned vectors are written into the
  output of the real ``nn.Embedding`` (``token_embedding.wrapped``) at the
  slot positions by a forward hook that exists only for that call;
* noise is predicted by ``unet.model.diffusion_model(x, t, context=, y=,
  transformer_options={})`` (what ``KModel.apply_model`` calls, in the DDPM
  timestep convention), on the schedule of ``unet.model.predictor``;
* photos are encoded by ``sd_model.encode_first_stage`` (scaling applied).

Forge loads every weight inside ``torch.inference_mode``, so its parameters
are inference tensors that autograd refuses to save. For a run,
``tuning_session`` swaps each of them for a normal ``nn.Parameter`` that
shares the same storage (no second copy of the weights; a real clone only
where a tensor cannot be aliased), and puts the original objects back
afterwards: values, dtypes, devices, parameter identity and inference flags
are exactly as before. It also has Forge's memory manager load the UNet,
text encoders and VAE first, swaps PyTorch SDPA in as the UNet's attention
function (Sage/flash/xformers wrappers may have no backward), gives the
transformer blocks' norms a copy of their input (the blocks add residuals in
place, ``x += n``, which autograd rejects), recomputes the weight copies of
manual-cast layers in the backward pass instead of keeping them, leaves the
infotext state as it found it, and undoes all of it even on error.

Nothing here imports Forge's ``backend`` or ``modules`` at module level.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from typing import Any, Iterator, Optional, Sequence

import torch

from ..adapter import NATIVE_RESOLUTION, ModelAdapter, ModelFamily, spliced_slots, webui_chunk
from ..errors import TuningFailed, UnsupportedModel

#: Token id in the slots before the hook overwrites their rows (Forge uses 0 for embedding positions too).
PLACEHOLDER_ID = 0
#: The VAE's downsampling factor in SD1, SD2 and SDXL.
LATENT_FACTOR = 8
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_QUANTIZED_STORAGE = ("nf4", "fp4", "gguf", "int8", "fp8", "float8")
_ENGINE_NAMES = {"Flux": "Flux", "Chroma": "Chroma (a Flux variant)", "StableDiffusion3": "Stable Diffusion 3",
                 "StableDiffusionXLRefiner": "the SDXL refiner"}


def _host_module(name: str):
    """A Forge module, imported on use; None outside Forge."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a host module failing at import
        return None


# ------------------------------------------------------------------ what can be tuned
def quantized_weights_reason(modules: Sequence[torch.nn.Module]) -> Optional[str]:
    """A short description of quantized weights (fp8, nf4/fp4, gguf, int8) in ``modules``, or None."""
    for root in modules:
        if root is None:
            continue
        for name, param in root.named_parameters():
            kind = type(param).__name__ + type(getattr(param, "data", param)).__name__
            if param.dtype not in _FLOAT_DTYPES:
                return f"{name} is stored as {str(param.dtype).replace('torch.', '')}"
            if any(marker in kind for marker in ("GGUF", "Params4bit", "Quant", "Int8")) \
                    or hasattr(param, "gguf_cls") or hasattr(param, "bnb_quantized") or hasattr(param, "quant_state"):
                return f"{name} is a quantized tensor ({type(param).__name__})"
    return None


def _engine_name(sd_model) -> str:
    name = type(sd_model).__name__
    return _ENGINE_NAMES.get(name, name)


def forge_family(sd_model) -> ModelFamily:
    """SD1, SD2 or SDXL from the engine's legacy flags; ``UnsupportedModel`` with a reason otherwise."""
    if sd_model is None or type(sd_model).__name__ == "FakeInitialModel" \
            or getattr(sd_model, "forge_objects", None) is None:
        raise UnsupportedModel("no Stable Diffusion model is loaded yet: choose an SD 1.5 or SDXL checkpoint first")
    if getattr(sd_model, "is_sdxl", False):
        if getattr(sd_model, "text_processing_engine_l", None) is None:
            raise UnsupportedModel("this is an SDXL refiner (it has no CLIP-L text encoder): "
                                   "load the SDXL base model to tune an identity")
        return ModelFamily.SDXL
    if getattr(sd_model, "is_sd2", False):
        return ModelFamily.SD2
    if getattr(sd_model, "is_sd1", False):
        return ModelFamily.SD1
    raise UnsupportedModel(f"{_engine_name(sd_model)} models cannot be tuned: "
                           "Celeb Basis works on Stable Diffusion 1.5 and SDXL checkpoints")


def check_forge_model(sd_model) -> ModelFamily:
    """Every reason a Forge/Neo model cannot be tuned, as one-line ``UnsupportedModel`` messages."""
    family = forge_family(sd_model)
    objects = getattr(sd_model, "forge_objects_original", None) or sd_model.forge_objects
    if getattr(sd_model, "is_inpaint", False):
        raise UnsupportedModel("the loaded model is an inpainting model: load the matching base checkpoint to tune")
    kmodel = objects.unet.model
    unet = kmodel.diffusion_model
    in_channels = getattr(unet, "in_channels", None)
    if in_channels is None:
        config = getattr(unet, "config", None)
        in_channels = config.get("in_channels") if isinstance(config, dict) else getattr(config, "in_channels", None)
    if in_channels not in (None, 4):
        raise UnsupportedModel(f"the loaded model's UNet takes {in_channels} channels (inpainting or instruct): "
                               "load a base SD 1.5 or SDXL checkpoint")
    predictor = getattr(kmodel, "predictor", None)
    if getattr(sd_model, "use_shift", False) or getattr(predictor, "prediction_type", None) \
            not in ("epsilon", "v_prediction") or getattr(predictor, "alphas_cumprod", None) is None:
        raise UnsupportedModel("this model uses flow matching (like Neo's rectified-flow SDXL), not the diffusion "
                               "schedule Celeb Basis tunes with: load an epsilon or v-prediction SD 1.5/SDXL "
                               "checkpoint")
    for attribute in ("storage_dtype", "computation_dtype"):
        value = getattr(kmodel, attribute, None)
        text = str(value).lower()
        if value is not None and any(marker in text for marker in _QUANTIZED_STORAGE):
            raise UnsupportedModel(f"the model's weights are quantized ({text.replace('torch.', '')}): load it in "
                                   "fp16/bf16 (Diffusion in Low Bits: Automatic, not fp8/nf4/gguf) to tune")
    args = _host_module("backend.args")
    dynamic = getattr(args, "dynamic_args", None)
    ops = dynamic.get("ops") if isinstance(dynamic, dict) else getattr(dynamic, "ops", None)
    if isinstance(ops, str) and any(marker in ops.upper() for marker in ("FP8", "GGUF", "BNB", "INT8")):
        raise UnsupportedModel(f"the model runs with quantized operations ({ops}): load it in fp16/bf16 to tune")
    reason = quantized_weights_reason([unet, objects.clip.cond_stage_model])
    if reason:
        raise UnsupportedModel(f"the model's weights are quantized ({reason}): load it in fp16/bf16 "
                               "(not fp8, nf4 or gguf) to tune")
    return family


# ------------------------------------------------------------------ manual cast
def _copies_weight(module: torch.nn.Module, args) -> bool:
    """Whether a manual-cast layer's forward on ``args`` needs gradients and makes a weight copy (another dtype
    or device than its input); a cast to the weight's own dtype and device is the weight itself, nothing kept."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not any(t.requires_grad for t in tensors):
        return False
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or not tensors:
        return True
    return tensors[0].dtype != weight.dtype or tensors[0].device != weight.device


def recompute_manual_casts(modules: Sequence[torch.nn.Module]):
    """Run Forge's manual-cast layers (weights stored in one dtype, computed in another, e.g. ``--unet-in-bf16``
    on the CPU) under activation checkpointing while gradients flow; returns the undo.

    Such a layer makes a computation-dtype copy of its weight in every forward and autograd would keep each
    copy for the backward pass: a whole second UNet in fp32 (measured in the real Forge: a bf16 SDXL tune went
    from 6 to over 20 GiB). Checkpointed, the copy is made again in the backward pass instead of kept.
    """
    from torch.utils.checkpoint import checkpoint

    patched = []
    for root in modules:
        for module in root.modules():
            if getattr(module, "parameters_manual_cast", False) is not True:
                continue
            had_own = "forward" in module.__dict__
            original = module.forward

            def forward(*args, _original=original, _module=module, **kwargs):
                if torch.is_grad_enabled() and _copies_weight(_module, args):
                    return checkpoint(_original, *args, use_reentrant=False, **kwargs)
                return _original(*args, **kwargs)

            module.forward = forward
            patched.append((module, had_own, original))

    def undo():
        for module, had_own, original in patched:
            if had_own:
                module.forward = original
            else:
                del module.forward

    return undo


# ------------------------------------------------------------------ inference tensors
def needs_normal_tensor(tensor: torch.Tensor) -> bool:
    """True for inference tensors, also those hidden in a normal ``Parameter`` (transformers' token-table
    resize under ``no_grad`` of an inference-mode model makes one): autograd and views refuse both."""
    if tensor.is_inference():
        return True
    try:
        tensor.detach()[...]
    except RuntimeError:
        return True
    return False


def _normal_alias(tensor: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A normal tensor viewing ``tensor``'s memory (no copy), or a clone if that is impossible.

    Returns (tensor, copied). Must run outside inference mode.
    """
    try:
        alias = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
        alias.set_(tensor.untyped_storage(), tensor.storage_offset(), tensor.size(), tensor.stride())
        if not alias.is_inference() and alias.data_ptr() == tensor.data_ptr():
            return alias, False
    except Exception:
        pass
    return tensor.detach().clone(), True


class TrainableAliases:
    """Swap every inference parameter/buffer of some modules for a normal one, and back.

    One replacement per original object (Forge registers the token-embedding
    weight twice); the originals are kept and put back by ``restore``.
    """

    def __init__(self, modules: Sequence[torch.nn.Module]):
        self.modules = [m for m in modules if m is not None]
        self.swapped: list[tuple[torch.nn.Module, str, str, torch.Tensor]] = []
        self.copied_bytes = 0
        self.aliased_bytes = 0

    def apply(self) -> "TrainableAliases":
        replacements: dict[int, torch.Tensor] = {}
        with torch.inference_mode(False):
            seen: set[int] = set()
            for root in self.modules:
                for module in root.modules():
                    if id(module) in seen:
                        continue
                    seen.add(id(module))
                    for kind in ("_parameters", "_buffers"):
                        store = getattr(module, kind)
                        for name, tensor in list(store.items()):
                            if tensor is None or not needs_normal_tensor(tensor):
                                continue
                            if id(tensor) not in replacements:
                                alias, copied = _normal_alias(tensor)
                                size = tensor.numel() * tensor.element_size()
                                if copied:
                                    self.copied_bytes += size
                                else:
                                    self.aliased_bytes += size
                                if kind == "_parameters":
                                    alias = torch.nn.Parameter(alias, requires_grad=False)
                                replacements[id(tensor)] = alias
                            self.swapped.append((module, kind, name, tensor))
                            store[name] = replacements[id(tensor)]
        return self

    def restore(self) -> None:
        for module, kind, name, original in reversed(self.swapped):
            getattr(module, kind)[name] = original
        self.swapped.clear()


# ------------------------------------------------------------------ the adapter
class ForgeAdapter(ModelAdapter):
    """Tune on Forge's or Forge Neo's loaded SD1 / SD2 / SDXL model."""

    def __init__(self, sd_model=None, *, resolution: Optional[int] = None, load_models: bool = True):
        if sd_model is None:
            shared = _host_module("modules.shared")
            sd_model = getattr(shared, "sd_model", None)
        self.family = check_forge_model(sd_model)
        self.sd_model = sd_model
        self.objects = getattr(sd_model, "forge_objects_original", None) or sd_model.forge_objects
        self.load_models = load_models
        self._resolution = resolution
        if self.family == ModelFamily.SDXL:
            self.engines = [sd_model.text_processing_engine_l, sd_model.text_processing_engine_g]
        else:
            self.engines = [sd_model.text_processing_engine]
        self._tables = [self._real_token_embedding(engine) for engine in self.engines]
        self.encoder_widths = tuple(int(table.weight.shape[1]) for table in self._tables)
        self.prediction_type = self.objects.unet.model.predictor.prediction_type
        info = getattr(sd_model, "sd_checkpoint_info", None)
        self.model_name = getattr(info, "model_name", None) or getattr(info, "name_for_extra", None) or ""
        self.last_aliases: Optional[TrainableAliases] = None

    @staticmethod
    def _real_token_embedding(engine) -> torch.nn.Embedding:
        transformer = engine.text_encoder.transformer
        embeddings = getattr(transformer, "text_model", transformer).embeddings
        table = embeddings.token_embedding
        table = getattr(table, "wrapped", table)  # CLIPEmbeddingForTextualInversion
        if not isinstance(table, torch.nn.Embedding):
            raise UnsupportedModel(f"unexpected token embedding {type(table).__name__} in Forge's text encoder")
        return table

    def check_supported(self) -> None:
        check_forge_model(self.sd_model)

    # -- vocabulary -------------------------------------------------------
    def token_embedding_tables(self) -> list[torch.Tensor]:
        """The tables as normal tensors (views of the weights, no copy: callers only read them)."""
        with torch.inference_mode(False):
            return [_normal_alias(table.weight.detach())[0] if needs_normal_tensor(table.weight)
                    else table.weight.detach() for table in self._tables]

    def tokenize(self, text: str) -> list[int]:
        return list(self.engines[0].tokenize([text])[0])

    # -- schedule and images ---------------------------------------------
    @property
    def device(self) -> torch.device:
        device = getattr(self.objects.unet, "load_device", None)
        if device is None:
            device = next(self.objects.unet.model.diffusion_model.parameters()).device
        return torch.device(device)

    @property
    def dtype(self) -> torch.dtype:
        kmodel = self.objects.unet.model
        dtype = getattr(kmodel, "computation_dtype", None)
        if not isinstance(dtype, torch.dtype):
            dtype = next(kmodel.diffusion_model.parameters()).dtype
        return dtype

    @property
    def resolution(self) -> int:
        return self._resolution or NATIVE_RESOLUTION[self.family]

    def alphas_cumprod(self) -> torch.Tensor:
        alphas = self.objects.unet.model.predictor.alphas_cumprod
        with torch.inference_mode(False):
            return alphas.detach().to(self.device, torch.float32).clone()

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``sd_model.encode_first_stage`` (Forge loads the VAE itself); a normal tensor comes back."""
        with torch.no_grad():
            latents = self.sd_model.encode_first_stage(pixels.to(self.device, torch.float32))
        with torch.inference_mode(False):
            latents = latents.float().to(self.device).clone()
        if not torch.isfinite(latents).all():
            raise TuningFailed("the VAE produced NaN for a photo: run the VAE in bf16 or fp32 "
                               "(Forge: --vae-in-fp32, Neo: --fp32-vae) or use another VAE")
        return latents

    # -- prompts with learned slots -----------------------------------------
    def encode_prompts(self, templates: Sequence[str], learned: torch.Tensor) -> Any:
        learned = self.batched_learned(templates, learned)
        hidden, pooled, offset = [], None, 0
        for engine, table, width in zip(self.engines, self._tables, self.encoder_widths):
            rows = [webui_chunk(engine, template, PLACEHOLDER_ID) for template in templates]
            tokens = torch.tensor([row[0] for row in rows], dtype=torch.long)
            with spliced_slots(table, learned[..., offset:offset + width], [row[1] for row in rows]):
                engine.embeddings.fixes = None  # no stale Textual Inversion splices
                z = engine.encode_with_transformers(tokens)
            pooled = getattr(z, "pooled", pooled)
            hidden.append(z)
            offset += width
        if len(hidden) == 1:
            crossattn = hidden[0]
        else:
            length = max(h.shape[1] for h in hidden)
            hidden = [torch.nn.functional.pad(h, (0, 0, 0, length - h.shape[1])) for h in hidden]
            crossattn = torch.cat(hidden, dim=2)
        return {"crossattn": crossattn, "pooled": pooled if self.family == ModelFamily.SDXL else None}

    def _size_vector(self, batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """SDXL's size conditioning as ``get_learned_conditioning`` builds it (crop 0, 0)."""
        embedder = self.sd_model.embedder
        values = (height, width, 0, 0, height, width)
        with torch.no_grad():
            out = torch.cat([embedder(torch.Tensor([value])) for value in values])
        with torch.inference_mode(False):
            flat = torch.flatten(out).unsqueeze(dim=0).repeat(batch, 1).to(like).clone()
        return flat

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Any) -> torch.Tensor:
        kmodel = self.objects.unet.model
        dtype = self.dtype
        extra = {}
        if self.family == ModelFamily.SDXL:
            batch, height, width = noisy_latents.shape[0], noisy_latents.shape[-2], noisy_latents.shape[-1]
            pooled = cond["pooled"]
            size = self._size_vector(batch, height * LATENT_FACTOR, width * LATENT_FACTOR, pooled)
            extra["y"] = torch.cat([pooled, size], dim=1).to(self.device, dtype)
        out = kmodel.diffusion_model(
            noisy_latents.to(self.device, dtype), timesteps.to(self.device).float(),
            context=cond["crossattn"].to(self.device, dtype), control=None, transformer_options={}, **extra,
        )
        return out.float()

    # -- state ---------------------------------------------------------------
    def frozen_modules(self) -> list[torch.nn.Module]:
        objects = self.objects
        vae = getattr(objects, "vae", None)
        return [objects.unet.model, objects.clip.cond_stage_model, getattr(vae, "first_stage_model", None)]

    def _load_models(self) -> None:
        """Forge's memory manager puts the UNet, text encoders and VAE where it runs them (as a generation would)."""
        memory = _host_module("backend.memory_management")
        load = getattr(memory, "load_models_gpu", None)
        if load is None or not self.load_models:
            return
        objects = self.objects
        patchers = [objects.unet, getattr(objects.clip, "patcher", None), getattr(objects.vae, "patcher", None)]
        patchers = [p for p in patchers if p is not None]
        kwargs = {}
        try:
            if "force_full_load" in inspect.signature(load).parameters:
                kwargs["force_full_load"] = True  # Neo: no partial loading, the graph needs every weight at hand
        except (TypeError, ValueError):
            pass
        with torch.inference_mode():  # as Forge itself calls it
            load(patchers, **kwargs)

    @staticmethod
    def _free_memory() -> None:
        memory = _host_module("backend.memory_management")
        empty = getattr(memory, "soft_empty_cache", None)
        if empty is not None:
            empty()

    @staticmethod
    def _use_pytorch_attention(guard) -> None:
        """The UNet's attention function is PyTorch SDPA while tuning (and back afterwards)."""
        unet_module = sys.modules.get("backend.nn.unet") or _host_module("backend.nn.unet")
        attention = _host_module("backend.attention")
        pytorch = getattr(attention, "attention_pytorch", None)
        if unet_module is None or pytorch is None or not hasattr(unet_module, "attention_function"):
            return
        current = unet_module.attention_function
        if current is pytorch:
            return
        unet_module.attention_function = pytorch
        guard.on_exit(lambda: setattr(unet_module, "attention_function", current))

    def _copy_norm_inputs(self, guard) -> None:
        """Forge's transformer blocks add residuals in place (``x += n``) after ``norm1(x)`` saved ``x``;
        each norm gets its own copy while gradients are on, so the backward pass finds what it saved."""

        def copy_input(module, args):
            if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
                return (args[0].clone(),) + tuple(args[1:])
            return None

        handles = []
        for module in self.objects.unet.model.diffusion_model.modules():
            norms = [getattr(module, name, None) for name in ("norm1", "norm2", "norm3")]
            if hasattr(module, "attn2") and all(isinstance(n, torch.nn.Module) for n in norms):
                handles.extend(norm.register_forward_pre_hook(copy_input) for norm in norms)

        def remove():
            for handle in handles:
                handle.remove()

        guard.on_exit(remove)

    @staticmethod
    def _keep_infotext(guard) -> None:
        """Whatever lands in the engines' ``last_extra_generation_params`` during tuning is dropped afterwards."""
        holders: list[tuple[Any, str, dict]] = []
        engine_module = _host_module("backend.text_processing.classic_engine")
        if isinstance(getattr(engine_module, "last_extra_generation_params", None), dict):  # Forge main
            holders.append((engine_module, "last_extra_generation_params", engine_module.last_extra_generation_params))
        args = _host_module("backend.args")
        dynamic = getattr(args, "dynamic_args", None)
        if isinstance(getattr(dynamic, "last_extra_generation_params", None), dict):  # Neo
            holders.append((dynamic, "last_extra_generation_params", dynamic.last_extra_generation_params))
        saved = [(holder, name, params, dict(params)) for holder, name, params in holders]

        def restore():
            for holder, name, params, content in saved:
                params.clear()
                params.update(content)
                setattr(holder, name, params)

        guard.on_exit(restore)

    def _make_trainable(self) -> TrainableAliases:
        aliases = TrainableAliases([m for m in self.frozen_modules() if m is not None]).apply()
        self.last_aliases = aliases
        return aliases

    @contextlib.contextmanager
    def tuning_session(self) -> Iterator[None]:
        """Load, swap inference tensors for aliases, then freeze/patch under a guard; undo in reverse.

        The guard sees only the aliases: the original parameters (inference
        tensors, whose flags cannot even be set outside inference mode) are
        never touched and come back as they were.
        """
        from ..model_guard import ModelStateGuard

        self.check_supported()
        with torch.inference_mode(False):
            self._load_models()
            aliases = self._make_trainable()
            try:
                with ModelStateGuard(self.frozen_modules()) as guard:
                    self._keep_infotext(guard)
                    guard.freeze()
                    self._use_pytorch_attention(guard)
                    self._copy_norm_inputs(guard)
                    guard.on_exit(recompute_manual_casts([m for m in self.frozen_modules() if m is not None]))
                    with torch.enable_grad():
                        yield
            finally:
                aliases.restore()
                self._free_memory()
