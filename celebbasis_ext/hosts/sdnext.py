"""SD.Next: its ``shared.sd_model`` is a diffusers pipeline, so the engine's diffusers adapter tunes it.

What SD.Next adds on top of a plain pipeline, and how it is handled:

* Loaded Textual-Inversion files become added tokens: SD.Next resizes each
  text encoder's token table and writes the vectors into the new rows. The
  basis and the model fingerprint only look at the base vocabulary (the first
  ``tokenizer.vocab_size`` rows), so they do not change when embeddings do,
  and a name that is only an added token is not "a word the model knows".
* Its offloading (balanced, model) is done by accelerate hooks that move
  whole components between CPU and GPU on every forward call. During tuning
  those hooks are suspended and the UNet, text encoders and VAE stay on
  ``devices.device``; hooks, devices and buffers are put back afterwards.
  Sequential and group offload (weights swapped in per layer, or on the
  meta device) are refused with a message.
* Weights made under ``torch.inference_mode`` are swapped for normal
  parameters sharing their memory for the run (as for Forge).
* Embeddings folder: ``shared.opts.embeddings_dir``; reload through
  ``sd_model.embedding_db`` plus the prompt-embeds cache. SD.Next finds
  embeddings in a prompt by the tokenizer's added tokens, which its reload
  never removes: a deleted identity's tokens are unloaded here, or its name
  would keep its vectors until the model is reloaded.

Host modules are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch

from ..diffusers_adapter import DiffusersAdapter
from ..errors import UnsupportedModel
from .forge import TrainableAliases, needs_normal_tensor, quantized_weights_reason


def _host_module(name: str):
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def embeddings_dir() -> Optional[Path]:
    """SD.Next's embeddings folder (``shared.opts.embeddings_dir``), or None outside SD.Next."""
    shared = _host_module("modules.shared")
    folder = getattr(getattr(shared, "opts", None), "embeddings_dir", None)
    return Path(folder).expanduser() if folder else None


def _tokens_of(name: str, tokenizer) -> list[str]:
    """The added tokens SD.Next made for embedding ``name``: ``name``, ``name_1``, ``name_2``, ... (as its
    prompt expansion, up to the first gap: ``name_2024`` of another file is not one of them)."""
    added = getattr(tokenizer, "added_tokens_encoder", None) or {}
    tokens = [name] if name in added else []
    while tokens and f"{name}_{len(tokens)}" in added:
        tokens.append(f"{name}_{len(tokens)}")
    return tokens


def forget_tokens(sd_model, names: Iterable[str]) -> list[str]:
    """Remove the added tokens of deleted embeddings ``names`` from every tokenizer and text encoder.

    Uses diffusers' own ``unload_textual_inversion`` (it renumbers the
    remaining added tokens and moves their rows with them), under the host's
    inference context as SD.Next writes embedding rows. Returns the tokens removed.
    """
    from diffusers.loaders import TextualInversionLoaderMixin

    devices = _host_module("modules.devices")
    context = getattr(devices, "inference_context", torch.no_grad)
    removed = []
    for suffix in ("", "_2", "_3"):
        tokenizer = getattr(sd_model, "tokenizer" + suffix, None)
        encoder = getattr(sd_model, "text_encoder" + suffix, None)
        if tokenizer is None or encoder is None:
            continue
        tokens = [token for name in names if name for token in _tokens_of(name, tokenizer)]
        if tokens:
            old = encoder.get_input_embeddings()
            with context():
                TextualInversionLoaderMixin.unload_textual_inversion(
                    sd_model, tokens=tokens, tokenizer=tokenizer, text_encoder=encoder)
                new = encoder.get_input_embeddings()  # a new nn.Embedding: keep the old one's flags
                new.weight.requires_grad_(old.weight.requires_grad)
                new.train(old.training)
            removed += tokens
    return removed


def reload_embeddings(sd_model=None, removed: Iterable[str] = ()) -> bool:
    """Reload the loaded model's embedding database (new/retrained files count at once, ``removed`` names
    stop counting); True if done."""
    if sd_model is None:
        modeldata = _host_module("modules.modeldata")
        sd_model = getattr(getattr(modeldata, "model_data", None), "sd_model", None)
    database = getattr(sd_model, "embedding_db", None)
    if database is None or not hasattr(database, "load_textual_inversion_embeddings"):
        return False
    if removed:
        forget_tokens(sd_model, removed)
    database.load_textual_inversion_embeddings(force_reload=True)
    parser = _host_module("modules.prompt_parser_diffusers")
    cache = getattr(parser, "cache", None)
    if hasattr(cache, "clear"):
        cache.clear()  # prompt embeds cached by prompt text would keep a retrained name's old vectors
    return True


class _PassThroughHook:
    """Stands in for an accelerate hook (``module._hf_hook``) while tuning: no moves, no offloading."""

    no_grad = False

    def init_hook(self, module):
        return module

    def pre_forward(self, module, *args, **kwargs):
        return args, kwargs

    def post_forward(self, module, output):
        return output

    def detach_hook(self, module):
        return module


class SDNextAdapter(DiffusersAdapter):
    """``DiffusersAdapter`` for SD.Next's loaded pipeline (see module docstring)."""

    def __init__(self, pipe=None, *, resolution: Optional[int] = None, model_name: str = ""):
        if pipe is None:
            shared = _host_module("modules.shared")
            pipe = getattr(shared, "sd_model", None)
        if pipe is None:
            raise UnsupportedModel("no model is loaded in SD.Next: choose an SD 1.5 or SDXL checkpoint first")
        info = getattr(pipe, "sd_checkpoint_info", None)
        model_name = model_name or getattr(info, "model_name", None) or getattr(info, "name", None) or ""
        super().__init__(pipe, model_name=model_name)
        self._resolution = resolution
        reason = quantized_weights_reason([pipe.unet, *self.encoders])
        if reason:
            raise UnsupportedModel(f"the model's weights are quantized ({reason}): disable quantization "
                                   "(SDNQ, bitsandbytes, layerwise fp8) for this model to tune")

    # -- vocabulary: only the base vocabulary (SD.Next appends loaded embeddings' rows) ------------
    def _base_vocab(self, index: int) -> int:
        tokenizer = self.tokenizers[index]
        size = getattr(tokenizer, "vocab_size", None)
        return int(size) if size else self.encoders[index].get_input_embeddings().weight.shape[0]

    def token_embedding_tables(self) -> list[torch.Tensor]:
        tables = []
        for index, encoder in enumerate(self.encoders):
            table = encoder.get_input_embeddings().weight.detach()
            if needs_normal_tensor(table):  # no views of inference tensors outside inference mode
                with torch.inference_mode(False):
                    table = table.clone()
            tables.append(table[: self._base_vocab(index)])
        return tables

    def is_single_token_word(self, word: str) -> bool:
        ids = self.tokenize(word)
        return len(ids) == 1 and ids[0] < self._base_vocab(0)

    # -- where it runs ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        devices = _host_module("modules.devices")
        device = getattr(devices, "device", None)
        return torch.device(device) if device is not None else self.pipe.unet.device

    @property
    def resolution(self) -> int:
        return self._resolution or super().resolution

    def alphas_cumprod(self) -> torch.Tensor:
        alphas = getattr(self.pipe.scheduler, "alphas_cumprod", None)
        if alphas is None:  # a sampler without a DDPM schedule: rebuild the model's training schedule
            from diffusers import DDPMScheduler

            alphas = DDPMScheduler.from_config(self.pipe.scheduler.config).alphas_cumprod
        return alphas.detach().to(self.device, torch.float32).clone()

    def _components(self) -> list[torch.nn.Module]:
        return [self.pipe.unet, *self.encoders, self.pipe.vae]

    def _check_offload(self) -> None:
        shared = _host_module("modules.shared")
        mode = getattr(getattr(shared, "opts", None), "diffusers_offload_mode", None)
        on_meta = any(p.device.type == "meta" for c in self._components() for p in c.parameters())
        if mode in ("sequential", "group") or on_meta:
            which = mode if mode in ("sequential", "group") else "sequential"
            raise UnsupportedModel(f"tuning does not work with {which} offload (weights are swapped in "
                                   "and out per layer): set Settings > Model offloading > offload mode to balanced, "
                                   "model or none, reload the model, then tune")

    def _hold_on_device(self, stack: contextlib.ExitStack) -> None:
        """Suspend accelerate's offload hooks and keep the components on ``device`` (all restored on exit)."""
        device = self.device
        hooked = [(m, m._hf_hook) for c in self._components() for m in c.modules() if hasattr(m, "_hf_hook")]
        buffers = [(m, name, b) for c in self._components() for m in c.modules()
                   for name, b in m._buffers.items() if b is not None]
        params = [(p, p.device) for c in self._components() for p in c.parameters()]

        def restore():
            for param, where in params:
                if param.device != where:
                    param.data = param.data.to(where)
            for module, name, buffer in buffers:
                module._buffers[name] = buffer
            for module, hook in hooked:
                module._hf_hook = hook

        stack.callback(restore)
        passthrough = _PassThroughHook()
        for module, _ in hooked:
            module._hf_hook = passthrough
        for component in self._components():
            if any(p.device != device for p in component.parameters()):
                component.to(device)

    @contextlib.contextmanager
    def tuning_session(self) -> Iterator[None]:
        self._check_offload()
        with torch.inference_mode(False), contextlib.ExitStack() as stack:
            self._hold_on_device(stack)
            aliases = TrainableAliases(self._components()).apply()
            stack.callback(aliases.restore)
            with super().tuning_session(), torch.enable_grad():
                yield
