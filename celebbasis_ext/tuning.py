"""Learning an identity's 2 x K coefficients with the model's own diffusion loss.

Faithful to the authors' code: the face feature goes through one linear
layer (weights N(0, 1), as their EqualLinear with lr_mul 1) and LeakyReLU(0.2), each token's K coefficients are
L2-normalised, the embedding is mean + c . B, only that layer trains (AdamW,
lr 1e-2 at batch 2), and a detached EMA (0.99) of the coefficients is the
result. ``direct`` mode optimises the normalised coefficients themselves.

One change from the original: the EMA starts at zero and is divided by
1 - 0.99^n (Adam's bias correction) instead of starting at the untrained first
output, which otherwise keeps 0.99^n of its weight (13% after 200 steps). The
window is the same ~100 steps, the result after 400 steps the same; shorter
runs stop paying for the random start (benchmarks/schedule_study.py: on the
planted-identity world the corrected EMA is at the plant after 100 steps, the
original's after 200).

Cheaper than the original where it keeps the result: augmented views are
encoded by the VAE once into a pool (not once per step), the loss is read back
only every few steps, and mixed precision runs where the device has it.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .adapter import ModelAdapter
from .augment import LOSS_MASKS, VIEW_MODES, augmented_views, face_weights
from .basis import CelebBasis
from .errors import BadInput, Cancelled, TuningFailed

MODES = ("paper", "direct")
DEFAULT_VIEWS = "photo"
"""Measured best on the planted worlds (README, "Training views"): `paper` views (the authors') found the
right person at chance there; `paper` stays available and unchanged."""
DEFAULT_LOSS_MASK = "face"
"""Measured with `photo` views on both planted face worlds (README, "Training views"): dlib named the right
person as often or more often than with `none` in all four tables, and its worst seed was 0.50 against 0.00."""
LOSS_MASK_AUTO = "auto"
"""TuneOptions' default: DEFAULT_LOSS_MASK, but "none" where no face encoder finds the face (a run with
face encoder "none"; ``pipeline.resolve_loss_mask``). Asking for "face" there is an error instead."""
DTYPES = ("auto", "fp32", "fp16", "bf16")
MAX_STEPS = 20000

#: ImageNet-style caption templates from Textual Inversion, as the authors use them.
TEMPLATES = (
    "a photo of {}", "a rendering of {}", "a cropped photo of the {}", "the photo of {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of {}", "a bright photo of the {}", "a cropped photo of {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of {}", "a photo of a nice {}",
    "a good photo of {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}", "an illustration of {}",
    "a depiction of {}",
)


@dataclass
class TuneOptions:
    """Everything that decides a tuning run (validated before any work)."""

    steps: int = 800
    learning_rate: float = 1e-2
    batch_size: int = 2
    seed: int = 23
    mode: str = "paper"
    dtype: str = "auto"
    ema_decay: float = 0.99
    pool_size: int = 64
    resolution: Optional[int] = None
    gradient_checkpointing: bool = False
    augment: bool = True
    views: str = DEFAULT_VIEWS  # paper | photo | mixed: see augment.py
    loss_mask: str = LOSS_MASK_AUTO  # auto | none | face: weight the diffusion loss towards the face
    report_every: int = 10
    templates: Sequence[str] = field(default_factory=lambda: TEMPLATES)

    def validate(self) -> "TuneOptions":
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise BadInput(f"steps must be a whole number from 1 to {MAX_STEPS}, not {self.steps!r}")
        if not isinstance(self.learning_rate, (int, float)) or not math.isfinite(self.learning_rate) \
                or not 0 < self.learning_rate <= 1:
            raise BadInput(f"learning rate must be a number in (0, 1], not {self.learning_rate!r}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 64:
            raise BadInput(f"batch size must be from 1 to 64, not {self.batch_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise BadInput(f"seed must be a non-negative whole number, not {self.seed!r}")
        if self.mode not in MODES:
            raise BadInput(f"unknown mode {self.mode!r}: choose {' or '.join(MODES)}")
        if self.views not in VIEW_MODES:
            raise BadInput(f"unknown views {self.views!r}: choose {', '.join(VIEW_MODES)}")
        if self.loss_mask not in (LOSS_MASK_AUTO, *LOSS_MASKS):
            raise BadInput(f"unknown loss mask {self.loss_mask!r}: choose {' or '.join(LOSS_MASKS)}")
        if self.dtype not in DTYPES:
            raise BadInput(f"unknown dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if not 1 <= self.pool_size <= 4096:
            raise BadInput(f"pool size must be from 1 to 4096, not {self.pool_size!r}")
        if self.resolution is not None and (self.resolution % 8 or not 64 <= self.resolution <= 2048):
            raise BadInput(f"resolution must be a multiple of 8 from 64 to 2048, not {self.resolution!r}")
        if isinstance(self.report_every, bool) or not isinstance(self.report_every, int) or self.report_every < 1:
            raise BadInput(f"report_every must be a whole number from 1, not {self.report_every!r}")
        if not isinstance(self.ema_decay, (int, float)) or not 0 <= self.ema_decay < 1:
            raise BadInput(f"EMA decay must be in [0, 1), not {self.ema_decay!r}")
        if not self.templates or any(template.count("{}") != 1 for template in self.templates):
            raise BadInput("each caption template needs exactly one {} slot")
        return self


@dataclass
class TuneProgress:
    step: int
    total: int
    loss: float
    eta_seconds: float
    # this step's coefficients (subjects, 2, K), detached on the CPU: lets a study follow the trajectory
    coefficients: Optional[torch.Tensor] = None


@dataclass
class TuneResult:
    """The learned identity before export: coefficients (2, K) and embedding (2, W)."""

    coefficients: torch.Tensor
    embedding: torch.Tensor
    losses: list[float]
    seconds: float
    steps: int
    setup_seconds: float = 0.0
    loop_seconds: float = 0.0


class EqualLinear(torch.nn.Module):
    """The authors' "EqualLinear" as they call it (lr_mul 1): weights N(0, 1), bias 0, no fan-in scale.

    With a unit-norm face feature the outputs start near N(0, 1), so every
    coefficient direction moves from the first step.
    """

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features))
        self.bias = torch.nn.Parameter(torch.zeros(out_features))
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lr_mul == 1:  # the authors' setting: no scaled copy of the weights (and its backward) per step
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight * self.lr_mul, self.bias * self.lr_mul)


class CoefficientMapper(torch.nn.Module):
    """face feature (B, D) -> unit-norm coefficients (B, 2, K): the only trained weights."""

    def __init__(self, feature_dim: int, k: int):
        super().__init__()
        self.k = k
        self.linear = EqualLinear(feature_dim, 2 * k)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        coefficients = F.leaky_relu(self.linear(features), 0.2).view(-1, 2, self.k)
        return F.normalize(coefficients, dim=-1)


def _autocast_dtype(option: str, device: torch.device, model_dtype: Optional[torch.dtype] = None):
    """Mixed precision on accelerators: the model's own half type, or bf16/fp16; none on CPU."""
    if device.type == "cpu" or option == "fp32":
        return None
    if option == "auto" and model_dtype in (torch.float16, torch.bfloat16):
        return model_dtype
    if option == "fp16":
        return torch.float16
    if option == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _adamw(parameters, learning_rate: float) -> torch.optim.Optimizer:
    """The authors' AdamW; fused (one pass over the 2 x K x D weights, not a dozen) where this torch has it
    for the device: CUDA, and the CPU from torch 2.4."""
    parameters = list(parameters)
    settings = dict(lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    try:
        return torch.optim.AdamW(parameters, fused=True, **settings)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without a fused kernel
        return torch.optim.AdamW(parameters, **settings)


def _grad_scaler(enabled: bool):
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        try:
            return torch.amp.GradScaler("cuda", enabled=enabled)
        except TypeError:
            pass
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator("cpu").manual_seed(seed)


@dataclass
class Subject:
    """One person to learn: per photo a head crop (PIL) or an ``augment.FacePhoto`` (head crop, the
    photo's own framing and where the face is in each), and features (photos, 2, D) or None (direct mode)."""

    head_crops: Sequence
    features: Optional[torch.Tensor] = None


def tune(
    adapter: ModelAdapter,
    basis: CelebBasis,
    head_crops: Sequence,
    features: Optional[torch.Tensor],
    options: TuneOptions,
    progress: Optional[Callable[[TuneProgress], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> TuneResult:
    """Learn one identity from its head crops (PIL images or ``augment.FacePhoto``s) and face features.

    ``features`` is (photos, 2, D): per photo the feature of the face and of its
    mirror image (or None in ``direct`` mode). The model is left exactly as it
    was, whatever happens; ``Cancelled`` is raised when ``should_cancel`` says so.
    """
    return tune_group(adapter, basis, [Subject(head_crops, features)], options, progress, should_cancel)[0]


def _check_subjects(adapter: ModelAdapter, basis: CelebBasis, subjects: Sequence[Subject], options: TuneOptions):
    options.validate()
    if not subjects:
        raise BadInput("no identity to learn")
    for subject in subjects:
        if not subject.head_crops:
            raise BadInput("no photo to learn from")
        if options.mode == "paper" and subject.features is None:
            raise BadInput("paper mode needs a face feature: pick a face encoder, or use mode 'direct'")
    if options.mode == "paper" and len({s.features.shape[-1] for s in subjects}) != 1:
        raise BadInput("all identities in one batch need features from the same face encoder")
    if basis.width != adapter.embedding_width:
        raise BadInput(f"the basis is {basis.width} wide but the model's embeddings are {adapter.embedding_width}")


class _ViewPool:
    """Augmented views of every subject, VAE-encoded once, with their face features (and face weights)."""

    def __init__(self, adapter, subjects, options, size, seed, device):
        latents, features, owners, boxes = [], [], [], []
        # a short run draws fewer views than the pool holds: encode no more than it can use
        count = min(options.pool_size, options.steps * options.batch_size)
        for index, subject in enumerate(subjects):
            views = augmented_views(subject.head_crops, count, size, seed + index, augment=options.augment,
                                    views=options.views)
            boxes += [view.face_box for view in views]
            for start in range(0, len(views), 8):
                chunk = torch.stack([view.canvas for view in views[start : start + 8]])
                latents.append(adapter.encode_images(chunk).float())
            if subject.features is not None and options.mode == "paper":
                table = subject.features.to(device, torch.float32)
                features += [table[v.photo_index, int(v.flipped) % table.shape[1]] for v in views]
            owners.append(len(views))
        self.latents = torch.cat(latents).to(device)
        # loss weights per view at latent resolution, or None for the plain mean
        mask = DEFAULT_LOSS_MASK if options.loss_mask == LOSS_MASK_AUTO else options.loss_mask
        self.weights = None if mask == "none" else torch.stack(
            [face_weights(box, *self.latents.shape[-2:]) for box in boxes]).to(device)
        self.features = torch.stack(features) if features else None
        # For subject i, the views are rows [offsets[i], offsets[i] + counts[i]).
        self.counts = torch.tensor(owners)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor] = None):
    """The mean squared error; with ``weights`` (B, 1, h, w) each view's weighted mean, then their mean.

    Normalising by each view's weight sum keeps the loss (and so the learning
    rate's meaning) on the plain MSE's scale whatever share of a view the face covers.
    """
    error = (prediction.float() - target.float()) ** 2
    if weights is None:
        return error.mean()
    weights = weights.to(error.dtype)
    return ((error * weights).sum(dim=(1, 2, 3)) / (weights.sum(dim=(1, 2, 3)) * error.shape[1])).mean()


class _GroupMapper(torch.nn.Module):
    """Coefficients (B, 2, K) for a batch whose rows belong to given subjects."""

    def __init__(self, mode: str, subjects: int, feature_dim: Optional[int], k: int):
        super().__init__()
        self.mode = mode
        if mode == "paper":
            self.mapper = CoefficientMapper(feature_dim, k)  # shared, as in the authors' multi-identity runs
        else:
            self.raw = torch.nn.Parameter(torch.randn(subjects, 2, k))

    def forward(self, features, owners):
        if self.mode == "paper":
            return self.mapper(features)
        return F.normalize(self.raw[owners], dim=-1)


def tune_group(
    adapter: ModelAdapter,
    basis: CelebBasis,
    subjects: Sequence[Subject],
    options: TuneOptions,
    progress: Optional[Callable[[TuneProgress], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> list[TuneResult]:
    """Learn several identities at once: every step holds ``batch_size`` views of each.

    One subject is the ordinary single-identity run. With several, the batch
    grows with them, which uses a GPU better than one run after another.
    """
    _check_subjects(adapter, basis, subjects, options)
    checkpointing = getattr(adapter, "gradient_checkpointing", False)
    adapter.gradient_checkpointing = checkpointing or options.gradient_checkpointing
    python_state = random.getstate()
    devices = [adapter.device] if adapter.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):  # the host's own random state is left alone
            return _tune_group(adapter, basis, subjects, options, progress, should_cancel)
    except RuntimeError as error:  # torch.cuda.OutOfMemoryError is one
        if "out of memory" not in str(error).lower():
            raise
        raise TuningFailed(OUT_OF_MEMORY_ADVICE) from None
    finally:
        adapter.gradient_checkpointing = checkpointing
        random.setstate(python_state)


OUT_OF_MEMORY_ADVICE = ("out of GPU memory while tuning: choose a lighter preset, use fp16 (--dtype fp16), "
                        "start the WebUI with --medvram, or close other programs using the GPU")


def _tune_group(adapter, basis, subjects, options, progress, should_cancel) -> list[TuneResult]:
    started = time.perf_counter()
    device = adapter.device
    generator = _seed_everything(options.seed)
    size = options.resolution or adapter.resolution
    rng_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    count = len(subjects)
    batch = options.batch_size * count
    owners = torch.arange(count).repeat_interleave(options.batch_size)

    with adapter.tuning_session():
        pool = _ViewPool(adapter, subjects, options, size, rng_seed, device)
        feature_dim = pool.features.shape[-1] if pool.features is not None else None
        mapper = _GroupMapper(options.mode, count, feature_dim, basis.k).to(device)
        mean = basis.mean.to(device)
        vectors = basis.vectors.to(device)
        alphas = adapter.alphas_cumprod()
        owners_device = owners.to(device)
        # per batch row: where its subject's views start in the pool, and how many there are (fixed)
        row_offsets, row_counts = pool.offsets[owners], pool.counts[owners]
        optimizer = _adamw(mapper.parameters(), options.learning_rate)
        autocast_dtype = _autocast_dtype(options.dtype, device, adapter.dtype)
        scaler = _grad_scaler(autocast_dtype == torch.float16 and device.type == "cuda")
        templates_count = len(options.templates)
        running: Optional[torch.Tensor] = None  # the EMA's sum, started at zero
        losses: list[float] = []
        pending: list[torch.Tensor] = []
        setup_seconds = time.perf_counter() - started
        loop_started = time.perf_counter()
        for step in range(1, options.steps + 1):
            if should_cancel is not None and should_cancel():
                raise Cancelled("tuning cancelled; nothing was written")
            draws = torch.rand(batch, generator=generator)
            picks = row_offsets + (draws * row_counts).long()
            timesteps = torch.randint(0, alphas.shape[0], (batch,), generator=generator)
            noise = torch.randn((batch, *pool.latents.shape[1:]), generator=generator)
            templates = [options.templates[i] for i in
                         torch.randint(0, templates_count, (batch,), generator=generator).tolist()]
            picks, timesteps, noise = picks.to(device), timesteps.to(device), noise.to(device)
            clean = pool.latents[picks]
            alpha = alphas[timesteps].view(-1, 1, 1, 1)
            noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
            target = noise if adapter.prediction_type == "epsilon" else alpha.sqrt() * noise - (1 - alpha).sqrt() * clean
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                coefficients = mapper(pool.features[picks] if pool.features is not None else None, owners_device)
                embedding = mean + torch.einsum("bpk,pkw->bpw", coefficients, vectors)
                cond = adapter.encode_prompts(templates, embedding)
                prediction = adapter.predict(noisy, timesteps, cond)
            loss = diffusion_loss(prediction, target, None if pool.weights is None else pool.weights[picks])
            optimizer.zero_grad(set_to_none=True)
            if scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:  # the scaler's bookkeeping costs a step more than the optimizer does on a tiny model
                loss.backward()
                optimizer.step()
            subject_mean = coefficients.detach().float().view(count, options.batch_size, 2, -1).mean(dim=1)
            if running is None:
                running = (1 - options.ema_decay) * subject_mean
            else:
                running.mul_(options.ema_decay).add_(subject_mean, alpha=1 - options.ema_decay)
            pending.append(loss.detach())
            # the first step too: on a slow machine the first report would otherwise be minutes away
            if step % options.report_every == 0 or step in (1, options.steps):
                values = torch.stack(pending).float().cpu().tolist()
                pending.clear()
                if not all(math.isfinite(v) for v in values):
                    raise TuningFailed("the loss became NaN or infinite; try fp32 (--dtype fp32) or a lower learning rate")
                losses.extend(values)
                if progress is not None:
                    elapsed = time.perf_counter() - loop_started
                    eta = elapsed / step * (options.steps - step)
                    progress(TuneProgress(step, options.steps, sum(values) / len(values), eta, subject_mean.cpu()))
        loop_seconds = time.perf_counter() - loop_started

    total = time.perf_counter() - started
    ema = (running / (1 - options.ema_decay ** options.steps)).cpu()
    return [
        TuneResult(ema[i], basis.embed(ema[i]), losses, total, options.steps, setup_seconds, loop_seconds)
        for i in range(count)
    ]
