"""Learning an identity's 2 x K coefficients with the model's own diffusion loss.

Faithful to the authors' code: the face feature goes through one linear
layer (equalised-lr init) and LeakyReLU(0.2), each token's K coefficients are
L2-normalised, the embedding is mean + c . B, only that layer trains (AdamW,
lr 1e-2 at batch 2), and a detached EMA (0.99) of the coefficients is the
result. ``direct`` mode optimises the normalised coefficients themselves.

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
from .augment import augmented_views, image_to_tensor
from .basis import CelebBasis
from .errors import BadInput, Cancelled, TuningFailed

MODES = ("paper", "direct")
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
        if self.dtype not in DTYPES:
            raise BadInput(f"unknown dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if not 1 <= self.pool_size <= 4096:
            raise BadInput(f"pool size must be from 1 to 4096, not {self.pool_size!r}")
        if self.resolution is not None and (self.resolution % 8 or not 64 <= self.resolution <= 2048):
            raise BadInput(f"resolution must be a multiple of 8 from 64 to 2048, not {self.resolution!r}")
        if not self.templates or any(template.count("{}") != 1 for template in self.templates):
            raise BadInput("each caption template needs exactly one {} slot")
        return self


@dataclass
class TuneProgress:
    step: int
    total: int
    loss: float
    eta_seconds: float


@dataclass
class TuneResult:
    """The learned identity before export: coefficients (2, K) and embedding (2, W)."""

    coefficients: torch.Tensor
    embedding: torch.Tensor
    losses: list[float]
    seconds: float
    steps: int


class EqualLinear(torch.nn.Module):
    """Linear layer with equalised learning rate (weights N(0, 1), scaled at run time)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features))
        self.bias = torch.nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class CoefficientMapper(torch.nn.Module):
    """face feature (B, D) -> unit-norm coefficients (B, 2, K): the only trained weights."""

    def __init__(self, feature_dim: int, k: int):
        super().__init__()
        self.k = k
        self.linear = EqualLinear(feature_dim, 2 * k)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        coefficients = F.leaky_relu(self.linear(features), 0.2).view(-1, 2, self.k)
        return F.normalize(coefficients, dim=-1)


class DirectCoefficients(torch.nn.Module):
    """The ablation: the normalised coefficients are the parameters (no face encoder)."""

    def __init__(self, k: int):
        super().__init__()
        self.raw = torch.nn.Parameter(torch.randn(2, k))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw, dim=-1).unsqueeze(0).expand(features.shape[0], -1, -1)


def _autocast_dtype(option: str, device: torch.device) -> Optional[torch.dtype]:
    if device.type == "cpu" or option == "fp32":
        return None
    if option == "fp16":
        return torch.float16
    if option == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


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


def tune(
    adapter: ModelAdapter,
    basis: CelebBasis,
    head_crops: Sequence,
    features: Optional[torch.Tensor],
    options: TuneOptions,
    progress: Optional[Callable[[TuneProgress], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> TuneResult:
    """Learn one identity from its head crops (PIL images) and face features.

    ``features`` is (photos, 2, D): per photo the feature of the face and of its
    mirror image (or None in ``direct`` mode). The model is left exactly as it
    was, whatever happens; ``Cancelled`` is raised when ``should_cancel`` says so.
    """
    options.validate()
    if options.mode == "paper" and features is None:
        raise BadInput("paper mode needs a face feature: pick a face encoder, or use mode 'direct'")
    if basis.width != adapter.embedding_width:
        raise BadInput(f"the basis is {basis.width} wide but the model's embeddings are {adapter.embedding_width}")
    if not head_crops:
        raise BadInput("no photo to learn from")
    started = time.perf_counter()
    device = adapter.device
    generator = _seed_everything(options.seed)
    size = options.resolution or adapter.resolution
    rng_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    faces = [image_to_tensor(crop) for crop in head_crops]
    views = augmented_views(faces, options.pool_size, size, rng_seed, augment=options.augment)

    with adapter.tuning_session():
        latents = torch.cat([
            adapter.encode_images(torch.stack([view.canvas for view in views[i : i + 8]]))
            for i in range(0, len(views), 8)
        ]).float()
        if features is not None:
            features = features.to(device, torch.float32)
            view_features = torch.stack([features[v.photo_index, int(v.flipped) % features.shape[1]] for v in views])
            mapper = CoefficientMapper(features.shape[-1], basis.k)
        else:
            view_features = torch.zeros(len(views), 1, device=device)
            mapper = DirectCoefficients(basis.k)
        mapper.to(device)
        mean = basis.mean.to(device)
        vectors = basis.vectors.to(device)
        alphas = adapter.alphas_cumprod()
        optimizer = torch.optim.AdamW(mapper.parameters(), lr=options.learning_rate,
                                      betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        autocast_dtype = _autocast_dtype(options.dtype, device)
        scaler = _grad_scaler(autocast_dtype == torch.float16 and device.type == "cuda")
        ema: Optional[torch.Tensor] = None
        losses: list[float] = []
        pending: list[torch.Tensor] = []
        step_started = time.perf_counter()
        for step in range(1, options.steps + 1):
            if should_cancel is not None and should_cancel():
                raise Cancelled("tuning cancelled; nothing was written")
            picks = torch.randint(0, len(views), (options.batch_size,), generator=generator)
            timesteps = torch.randint(0, alphas.shape[0], (options.batch_size,), generator=generator)
            noise = torch.randn((options.batch_size, *latents.shape[1:]), generator=generator)
            templates = [options.templates[int(i)] for i in
                         torch.randint(0, len(options.templates), (options.batch_size,), generator=generator)]
            picks, timesteps, noise = picks.to(device), timesteps.to(device), noise.to(device)
            clean = latents[picks]
            alpha = alphas[timesteps].view(-1, 1, 1, 1)
            noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
            target = noise if adapter.prediction_type == "epsilon" else alpha.sqrt() * noise - (1 - alpha).sqrt() * clean
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                coefficients = mapper(view_features[picks])
                embedding = mean + torch.einsum("bpk,pkw->bpw", coefficients, vectors)
                cond = adapter.encode_prompts(templates, embedding)
                prediction = adapter.predict(noisy, timesteps, cond)
            loss = F.mse_loss(prediction.float(), target.float())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            batch_mean = coefficients.detach().float().mean(dim=0)
            ema = batch_mean if ema is None else options.ema_decay * ema + (1 - options.ema_decay) * batch_mean
            pending.append(loss.detach())
            if step % options.report_every == 0 or step == options.steps:
                values = torch.stack(pending).float().cpu().tolist()
                pending.clear()
                if not all(math.isfinite(v) for v in values):
                    raise TuningFailed("the loss became NaN or infinite; try fp32 (--dtype fp32) or a lower learning rate")
                losses.extend(values)
                if progress is not None:
                    elapsed = time.perf_counter() - step_started
                    eta = elapsed / step * (options.steps - step)
                    progress(TuneProgress(step, options.steps, sum(values) / len(values), eta))

    coefficients = ema.cpu()
    return TuneResult(coefficients, basis.embed(coefficients), losses, time.perf_counter() - started, options.steps)
