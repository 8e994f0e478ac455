"""The one interface between the engine and a loaded Stable Diffusion model.

Each host (diffusers, A1111's ldm/sgm models, Forge) implements
``ModelAdapter`` in its own module; the tuning loop, the basis and the
exporter only ever talk to this interface. Data flows one way: the engine asks
for token tables (basis), encodes photos to latents once, then per step encodes
prompts with the two learned vectors spliced in and asks for a noise
prediction.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch


class ModelFamily(str, enum.Enum):
    """Stable Diffusion generations this engine knows."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"


#: Keys of the exported Textual-Inversion file, per family. A1111, Forge,
#: SD.Next, ComfyUI and diffusers all read these.
EXPORT_KEYS = {
    ModelFamily.SD1: ("emb_params",),
    ModelFamily.SD2: ("emb_params",),
    ModelFamily.SDXL: ("clip_l", "clip_g"),
}

#: Training resolution per family (what the model was trained at).
NATIVE_RESOLUTION = {ModelFamily.SD1: 512, ModelFamily.SD2: 768, ModelFamily.SDXL: 1024}


@dataclass(frozen=True)
class PromptSlots:
    """A prompt template tokenised, with the positions of the two learned slots.

    ``segments`` are the template's text pieces around ``{}``; every adapter
    tokenises them with its own tokenizers and puts the two learned vectors
    between them, so no vocabulary word is ever used as a placeholder.
    """

    template: str

    @property
    def segments(self) -> tuple[str, str]:
        before, _, after = self.template.partition("{}")
        return before.strip(), after.strip()


class ModelAdapter(abc.ABC):
    """What the engine needs from a loaded model (see module docstring)."""

    family: ModelFamily
    #: Width of each text encoder's token embedding, in export-key order.
    encoder_widths: tuple[int, ...]
    #: "epsilon" or "v_prediction".
    prediction_type: str = "epsilon"
    #: Human-readable model name for metadata ("" if unknown).
    model_name: str = ""

    @property
    def export_keys(self) -> tuple[str, ...]:
        return EXPORT_KEYS[self.family]

    @property
    def embedding_width(self) -> int:
        """Width of one learned vector across all text encoders (SDXL: 768 + 1280)."""
        return sum(self.encoder_widths)

    @property
    def resolution(self) -> int:
        return NATIVE_RESOLUTION[self.family]

    # -- vocabulary and token tables -------------------------------------
    @abc.abstractmethod
    def token_embedding_tables(self) -> list[torch.Tensor]:
        """The raw input token-embedding tables (vocab x width), one per encoder."""

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens (first tokenizer)."""

    def is_single_token_word(self, word: str) -> bool:
        """True when ``word`` is one vocabulary token (a name would shadow it)."""
        return len(self.tokenize(word)) == 1

    def fingerprint(self) -> str:
        """A short hash of the token tables: fine-tunes get their own basis."""
        return fingerprint_tables(self.token_embedding_tables())

    # -- the training step's pieces --------------------------------------
    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where the UNet computes."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """The UNet's parameter dtype."""

    @abc.abstractmethod
    def alphas_cumprod(self) -> torch.Tensor:
        """The training schedule's cumulative alphas (float32, on ``device``)."""

    @abc.abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Latents (already multiplied by the VAE scale) of images in [-1, 1], NCHW."""

    @abc.abstractmethod
    def encode_prompts(self, templates: Sequence[str], learned: torch.Tensor) -> Any:
        """Conditioning for each template with ``learned`` in its ``{}`` slot.

        ``learned`` is (2, embedding_width) or (batch, 2, embedding_width); the
        result is opaque to the engine and goes straight to ``predict``. It
        must stay differentiable with respect to ``learned``.
        """

    def batched_learned(self, templates: Sequence[str], learned: torch.Tensor) -> torch.Tensor:
        """``learned`` as (batch, 2, embedding_width), one row per template; refuse other shapes."""
        from .errors import BadInput

        batch = len(templates)
        if learned.dim() == 2:
            learned = learned.unsqueeze(0).expand(batch, -1, -1)
        if tuple(learned.shape) != (batch, SLOT_COUNT, self.embedding_width):
            raise BadInput(
                f"learned vectors must be (2, {self.embedding_width}) or ({batch}, 2, {self.embedding_width}), "
                f"not {tuple(learned.shape)}"
            )
        return learned

    @abc.abstractmethod
    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Any) -> torch.Tensor:
        """The model's raw output (noise or v) for ``noisy_latents`` at ``timesteps``."""

    @abc.abstractmethod
    def frozen_modules(self) -> list[torch.nn.Module]:
        """Every module whose state tuning must leave exactly as it found it."""

    @contextlib.contextmanager
    def tuning_session(self) -> Iterator[None]:
        """Prepare the model for backprop into the learned slots, and undo it all.

        The default freezes every parameter and puts modules in eval mode via
        ``ModelStateGuard``; host adapters extend it (move to GPU, swap the
        attention function, make inference tensors trainable, ...).
        """
        from .model_guard import ModelStateGuard

        with ModelStateGuard(self.frozen_modules()) as guard:
            guard.freeze()
            yield


#: Token slots one learned identity occupies in a prompt.
SLOT_COUNT = 2


@contextlib.contextmanager
def spliced_slots(table: torch.nn.Module, vectors: torch.Tensor, starts: Sequence[int]) -> Iterator[None]:
    """While inside, ``table``'s output carries ``vectors`` (B, 2, W) at each row's slot pair.

    A forward hook on a token-embedding module: differentiable with respect to
    ``vectors``, and gone when the block ends. Host adapters that run the
    host's own text encoder use it to put the learned identity in the prompt.
    """
    rows = torch.arange(len(starts)).repeat_interleave(SLOT_COUNT)
    cols = (torch.tensor(list(starts))[:, None] + torch.arange(SLOT_COUNT)[None, :]).reshape(-1)

    def hook(module, inputs, output):
        if output.shape[0] != len(starts):
            return output
        values = vectors.reshape(-1, vectors.shape[-1]).to(output.device, output.dtype)
        return output.index_put((rows.to(output.device), cols.to(output.device)), values)

    handle = table.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def webui_chunk(engine, template: str, placeholder_id: int) -> tuple[list[int], int]:
    """One 77-token chunk as A1111's and Forge's prompt engines build it, with the slot pair in it.

    ``engine`` is the host's text embedder or engine (``tokenize``, ``id_start``,
    ``id_end``, ``id_pad``, ``chunk_length``). Returns the ids and the position
    of the first slot; the placeholder's embedding row is overwritten anyway.
    """
    from .errors import BadInput

    before, after = PromptSlots(template).segments
    head, tail = (list(ids) for ids in engine.tokenize([before, after]))
    body = head + [placeholder_id] * SLOT_COUNT + tail
    chunk_length = getattr(engine, "chunk_length", 75)
    if len(body) > chunk_length:
        raise BadInput(f"the caption template {template!r} is longer than {chunk_length} tokens")
    tokens = [engine.id_start] + body + [engine.id_end] * (chunk_length + 1 - len(body))
    if engine.id_end != engine.id_pad:  # OpenCLIP-style padding: pad ids after the first end token
        first_end = 1 + len(body)
        tokens[first_end + 1:] = [engine.id_pad] * (len(tokens) - first_end - 1)
    return tokens, 1 + len(head)


def fingerprint_tables(tables: Sequence[torch.Tensor]) -> str:
    """sha256 over the tables' bytes (float32, CPU): 16 hex digits."""
    digest = hashlib.sha256()
    for table in tables:
        data = table.detach().to("cpu", torch.float32).contiguous()
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:16]
