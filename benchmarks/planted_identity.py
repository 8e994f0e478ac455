"""Planted identity: does tuning lower the diffusion loss and find a known embedding?

On a random-weight model the question has no answer: its UNet ignores the
text (its prediction moves ~3% between two identities, and the loss on images
rendered from a planted embedding is the same at the plant as anywhere else).
So this script first teaches a tiny model of the real architecture (CLIP text
encoder -> cross-attention UNet, 8x8x4 latents, the adapter's own prompt
splicing) to read the embedding, then plants an identity and lets ``tune()``
look for it.

1. A toy world. An identity is what tuning learns: coefficients c (2 x K, each
   token's K numbers unit-norm) in the celeb basis, embedding e = basis.embed(c)
   spliced into caption templates. Its "photo" is a latent picture: token p
   paints colour p (two orthonormal colours of the 4 latent channels), its k-th
   coefficient sets that colour's strength in the k-th region of the 8x8 grid
   (quadrants for K = 4), plus a little noise. The map c -> picture is linear
   and one-to-one, so the picture determines the identity.
2. Teaching. The UNet alone (text encoder, basis and VAE frozen) trains for a
   few hundred steps with the model's own objective (epsilon or v) on photos
   of a pool of 512 random identities; 30% of the timesteps are drawn from the
   noisiest 400, where only the text can tell identities apart.
3. The plant. ``n_identities`` fresh identities (none seen in teaching); one,
   c*, is planted: ``render_count`` latents are sampled from e* with the
   pipeline's DDIM sampler, i.e. the targets are rendered from a known
   embedding by the model itself. They reach ``tune()`` as 64x64 images through
   a toy codec standing in for the VAE (a random VAE is no autoencoder, so a
   decode-encode round trip would scramble them; the codec stores each latent
   value in an 8x8-pixel block and reads it back up to 8-bit rounding).
4. ``tune()`` runs unchanged from its own random start, with ``augment=False``
   so the targets are seen as they are, in ``direct`` mode and in ``paper``
   mode (one fixed random face feature through the trained linear layer).
   Each has a control run: the same seed (so the same start, timesteps, noise
   and templates) at a learning rate of 1e-9, which tells how much of the
   loss curve's fall is only the timestep sequence.

Figures: the tuning loss (first vs last 20% of steps, and the last 20% paired
with the control); a probe loss on the targets with fixed noise, timesteps and
templates (common random numbers) at the start, at the learned coefficients,
at c*, at the other identities and at random coefficients; the cosine of the
learned coefficients with c* and with the other identities; and a render from
the learned embedding (same seeds as the targets) compared by latent MSE with
the targets, with every identity's renders and with c*'s true picture.

Why tiny-sd2 by default: it predicts v, so at high noise its output is the
clean picture and a wrong identity costs a lot; 600 teaching steps suffice.
tiny-sd1 predicts epsilon, where knowing the identity is worth only
~sqrt(alpha / (1 - alpha)) of the picture in the output at high noise (the
diffusion loss barely depends on the text): after 600 steps its renders do
not depend on the identity at all. ``--arch tiny-sd1`` teaches it for 1500
steps, 80% of them at high noise (about 4 minutes in all); it then reads its
text, but the loss landscape is shallower and the coefficients less sharply
identified than on tiny-sd2.

Read the tuning loss curve together with its control: when tuning converges
within the first fifth of the steps (paper mode does, its mapper's output
starts near zero and turns fast), first-vs-last-20% shows no fall at all
while the paired difference with the control shows the whole gain.

Usage::

    PYTHONPATH=. python benchmarks/planted_identity.py [--seeds 0,1,2] [--json out.json] [--plot out.png]

Each seed builds its own world (its own taught UNet, identities and plant)
and tunes in it; the report ends with every figure's mean over the seeds and
its worst seed. About 1.5 minutes per seed on 2 CPU cores with ``--threads 1``
(which is also much faster than two threads on a busy machine). Everything is
seeded: the same seed and thread count give the same figures.
``Config.quick`` is the smaller version tests/test_planted_identity.py runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from celebbasis_ext.architectures import build_pipeline  # noqa: E402
from celebbasis_ext.basis import basis_for  # noqa: E402
from celebbasis_ext.diffusers_adapter import DiffusersAdapter  # noqa: E402
from celebbasis_ext.tuning import TuneOptions, tune  # noqa: E402

#: The basis when no names file is given: a dozen names, distinct first and family names.
DEFAULT_NAMES = (
    "Tom Hanks", "Emma Stone", "Jackie Chan", "Brad Pitt", "Angelina Jolie", "Will Smith",
    "Meryl Streep", "Denzel Washington", "Natalie Portman", "Keanu Reeves", "Scarlett Johansson",
    "Morgan Freeman",
)
TEMPLATES = ("a photo of {}", "a close-up photo of {}", "a rendering of {}", "a good photo of {}")
CONTROL_LR = 1e-9  # the smallest change TuneOptions accepts: same run, no learning


@dataclass
class Config:
    seed: int = 0
    architecture: str = "tiny-sd2"
    k: int = 4
    amplitude: float = 2.0
    photo_noise: float = 0.1
    context_pool: int = 512
    train_steps: int = 600
    train_batch: int = 16
    train_lr: float = 5e-3
    high_t_fraction: float = 0.3
    high_t_span: int = 400
    n_identities: int = 6
    plant_taught: bool = False  # plant among the taught identities (the first of the pool) instead of fresh ones
    render_count: int = 4
    render_steps: int = 20
    tune_steps: int = 400
    tune_batch: int = 4
    paper_lr: float = 1e-2  # the engine's default (the authors' value)
    # direct mode's raw N(0, 1) vector turns far slower per AdamW step than paper mode's near-zero mapper output
    direct_lr: float = 3e-2
    feature_dim: int = 512
    probe_samples: int = 64
    modes: Sequence[str] = ("direct", "paper")
    control: bool = True
    templates: Sequence[str] = TEMPLATES
    names_file: Optional[str] = None

    @classmethod
    def quick(cls, seed: int = 0) -> "Config":
        """The test's version (~30 s): the UNet taught only the six identities, one of which is planted;
        shorter tuning, direct mode only, no control run."""
        return cls(seed=seed, context_pool=6, plant_taught=True, train_steps=200, high_t_fraction=0.5,
                   render_count=2, render_steps=10, tune_steps=250, probe_samples=32, modes=("direct",),
                   control=False)

    @classmethod
    def for_architecture(cls, architecture: str, seed: int = 0) -> "Config":
        """tiny-sd1 predicts epsilon and needs ~2.5x the teaching, mostly at high noise, to read its text."""
        if architecture == "tiny-sd1":
            return cls(seed=seed, architecture=architecture, train_steps=1500, high_t_fraction=0.8)
        return cls(seed=seed, architecture=architecture)


# -- the toy world ------------------------------------------------------------------------------

class ToyWorld:
    """Coefficients (..., 2, K) -> latent pictures (..., 4, 8, 8), linear and one-to-one."""

    def __init__(self, k: int, amplitude: float, generator: torch.Generator):
        rows = 2 ** (int(math.log2(k)) // 2) if k > 0 else 0
        if k < 1 or k > 64 or k & (k - 1) or 8 % rows or 8 % (k // rows):
            raise ValueError(f"K must be a power of two from 1 to 64, not {k}")
        cols = k // rows
        regions = torch.zeros(k, 8, 8)
        for index in range(k):
            r, c = divmod(index, cols)
            regions[index, r * 8 // rows : (r + 1) * 8 // rows, c * 8 // cols : (c + 1) * 8 // cols] = 1
        colours, _ = torch.linalg.qr(torch.randn(4, 2, generator=generator))  # two orthonormal colours
        self.patterns = amplitude * colours.T[:, None, :, None, None] * regions[None, :, None]  # (2, K, 4, 8, 8)

    def picture(self, coefficients: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...pk,pkchw->...chw", coefficients.float(), self.patterns)


def random_coefficients(count: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 2, K), each token's K numbers unit-norm: the set tuning searches."""
    return F.normalize(torch.randn(count, 2, k, generator=generator), dim=-1)


# -- a toy codec standing in for the VAE ---------------------------------------------------------

class ToyCodec:
    """Latents (4, 8, 8) <-> 64x64 RGB images, exact up to 8-bit rounding.

    Each latent cell is an 8x8-pixel block: the top half holds channels 0-2 as
    RGB, the bottom half channel 3 as grey; [-limit, limit] maps to 0-255.
    Encoding takes the block means.
    """

    def __init__(self, limit: float = 4.0):
        self.limit = limit

    def decode(self, latent: torch.Tensor):
        from PIL import Image

        unit = ((latent.float().clamp(-self.limit, self.limit) / self.limit) + 1) / 2  # (4, 8, 8) in [0, 1]
        halves = torch.stack([unit[:3], unit[3:].expand(3, -1, -1)], dim=2)  # c, row, half, col
        image = halves[:, :, :, None, :, None].expand(3, 8, 2, 4, 8, 8).reshape(3, 64, 64)
        return Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, 64, 64) in [-1, 1] -> latents (B, 4, 8, 8)."""
        unit = (pixels.float() + 1) / 2
        means = unit.reshape(unit.shape[0], 3, 8, 2, 4, 8, 8).mean(dim=(4, 6))  # b, c, row, half, col
        latent = torch.cat([means[:, :, :, 0], means[:, :, :, 1].mean(dim=1, keepdim=True)], dim=1)
        return (latent * 2 - 1) * self.limit


class CodecAdapter(DiffusersAdapter):
    """The diffusers adapter with the toy codec as its image encoder; all else unchanged."""

    def __init__(self, pipe, codec: ToyCodec):
        super().__init__(pipe, "planted-identity toy")
        self.codec = codec

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(pixels).to(self.device)


def image_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


# -- teaching, rendering, measuring ---------------------------------------------------------------

def _target(adapter, noise, clean, alpha):
    if adapter.prediction_type == "epsilon":
        return noise
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * clean


def teach_unet(adapter, basis, world: ToyWorld, pool: torch.Tensor, config: Config,
               generator: torch.Generator) -> list[float]:
    """Train the UNet (only) on photos of the pool's identities with their captions; the loss per step."""
    unet = adapter.pipe.unet
    alphas = adapter.alphas_cumprod()
    steps = alphas.shape[0]
    # every (identity, template) of the pool, encoded once (the text encoder is frozen)
    count, templates = len(pool), list(config.templates)
    pairs = [(i, template) for i in range(count) for template in templates]
    with torch.no_grad():
        contexts = torch.cat([
            adapter.encode_prompts([template for _, template in pairs[j : j + 64]],
                                   basis.embed(pool[[i for i, _ in pairs[j : j + 64]]]))["context"]
            for j in range(0, len(pairs), 64)
        ])
    contexts = contexts.view(count, len(templates), *contexts.shape[1:])
    pictures = world.picture(pool)
    unet.train()
    unet.requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.train_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / config.train_steps)))
    losses = []
    try:
        for _ in range(config.train_steps):
            picks = torch.randint(0, count, (config.train_batch,), generator=generator)
            template = torch.randint(0, len(templates), (config.train_batch,), generator=generator)
            t = torch.randint(0, steps, (config.train_batch,), generator=generator)
            high = torch.rand(config.train_batch, generator=generator) < config.high_t_fraction
            t = torch.where(high, steps - 1 - t % config.high_t_span, t)
            context = contexts[picks, template]
            jitter = torch.randn((config.train_batch, 4, 8, 8), generator=generator)
            clean = pictures[picks] + config.photo_noise * jitter
            noise = torch.randn(clean.shape, generator=generator)
            alpha = alphas[t].view(-1, 1, 1, 1)
            noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
            prediction = unet(noisy, t, encoder_hidden_states=context).sample
            loss = F.mse_loss(prediction, _target(adapter, noise, clean, alpha))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    finally:
        unet.requires_grad_(False)
        unet.eval()
    return losses


@torch.no_grad()
def render(adapter, basis, coefficients: torch.Tensor, seeds: Sequence[int], steps: int,
           template: str = TEMPLATES[0]) -> torch.Tensor:
    """DDIM samples (len(seeds), 4, 8, 8), in latent space, from the embedding of ``coefficients`` (2, K)."""
    context = adapter.encode_prompts([template], basis.embed(coefficients.float()))["context"]
    result = adapter.pipe(prompt_embeds=context.expand(len(seeds), -1, -1), num_inference_steps=steps,
                          guidance_scale=1.0, height=64, width=64, output_type="latent",
                          generator=[torch.Generator().manual_seed(seed) for seed in seeds])
    return result.images.float()


class LossProbe:
    """The training loss on fixed latents with fixed noise, timesteps and templates (common random numbers)."""

    def __init__(self, adapter, basis, latents: torch.Tensor, samples: int, templates: Sequence[str], seed: int):
        generator = torch.Generator().manual_seed(seed)
        count = max(samples, len(latents))
        alphas = adapter.alphas_cumprod()
        self.adapter, self.basis = adapter, basis
        clean = latents[torch.arange(count) % len(latents)].float()
        self.t = ((torch.arange(count) + torch.rand(count, generator=generator)) * alphas.shape[0] / count).long()
        noise = torch.randn(clean.shape, generator=generator)
        alpha = alphas[self.t].view(-1, 1, 1, 1)
        self.noisy = alpha.sqrt() * clean + (1 - alpha).sqrt() * noise
        self.target = _target(adapter, noise, clean, alpha)
        self.templates = [templates[i % len(templates)] for i in range(count)]

    @torch.no_grad()
    def __call__(self, coefficients: torch.Tensor) -> float:
        embedding = self.basis.embed(F.normalize(coefficients.float(), dim=-1))
        prediction = self.adapter.predict(self.noisy, self.t, self.adapter.encode_prompts(self.templates, embedding))
        return F.mse_loss(prediction.float(), self.target).item()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the two tokens of the cosine between their K coefficients."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _fifths(values: Sequence[float]) -> tuple[float, float]:
    fifth = max(1, len(values) // 5)
    return _mean(values[:fifth]), _mean(values[-fifth:])


@dataclass
class PlantedWorld:
    """A taught model with one identity planted: what tuning runs on, and what it is judged against."""

    adapter: "CodecAdapter"
    basis: object
    identities: torch.Tensor  # (n, 2, K)
    planted: int
    others: list
    seeds: list
    renders: torch.Tensor  # (n, render_count, 4, 8, 8)
    truths: torch.Tensor
    images: list  # the planted identity's renders as photos
    features: torch.Tensor  # (photos, 2, D): one fixed random "face feature" for paper mode
    probe: "LossProbe"
    report: dict  # the set-up's own figures
    train_seconds: float
    render_seconds: float


def plant_identity(config: Config, log=print) -> PlantedWorld:
    """Steps 1-3: teach the UNet, make fresh identities, render the planted one."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    pipe = build_pipeline(config.architecture, seed=config.seed)
    codec = ToyCodec()
    adapter = CodecAdapter(pipe, codec)
    if adapter.family.value == "sdxl":
        raise ValueError("the toy world is for SD1/SD2-style models (tiny-sd1, tiny-sd2)")
    with tempfile.TemporaryDirectory() as scratch:
        names_file = config.names_file
        if names_file is None:
            names_file = os.path.join(scratch, "names.txt")
            Path(names_file).write_text("\n".join(DEFAULT_NAMES) + "\n", encoding="utf-8")
        basis = basis_for(adapter, names_file=names_file, k=config.k, cache_dir=os.path.join(scratch, "basis"))
    k = basis.k
    world = ToyWorld(k, config.amplitude, generator)

    # -- teach the UNet to read the embedding ------------------------------------------------------
    t0 = time.perf_counter()
    pool = random_coefficients(config.context_pool, k, generator)
    train_losses = teach_unet(adapter, basis, world, pool, config, generator)
    train_seconds = time.perf_counter() - t0
    log(f"{config.architecture} ({adapter.prediction_type}), K={k}: UNet taught for {config.train_steps} steps, "
        f"loss {_mean(train_losses[:20]):.4f} -> {_mean(train_losses[-20:]):.4f} ({train_seconds:.1f} s)")

    # -- fresh identities; plant one ----------------------------------------------------------------
    t0 = time.perf_counter()
    identities = pool[: config.n_identities] if config.plant_taught else \
        random_coefficients(config.n_identities, k, generator)
    planted = int(torch.randint(0, config.n_identities, (1,), generator=generator))
    others = [i for i in range(config.n_identities) if i != planted]
    seeds = [10_000 * config.seed + s for s in range(config.render_count)]
    renders = torch.stack([render(adapter, basis, c, seeds, config.render_steps) for c in identities])
    truths = world.picture(identities)  # (n, 4, 8, 8)
    render_truth = [[F.mse_loss(renders[i], truths[j].expand_as(renders[i])).item()
                     for j in range(config.n_identities)] for i in range(config.n_identities)]
    render_accuracy = _mean([float(int(np.argmin(row)) == i) for i, row in enumerate(render_truth)])
    targets = renders[planted]
    images = [codec.decode(latent) for latent in targets]
    seen = adapter.encode_images(torch.stack([image_tensor(image) for image in images]))
    codec_error = (seen - targets.clamp(-codec.limit, codec.limit)).abs().max().item()
    render_seconds = time.perf_counter() - t0
    log(f"targets: {config.render_count} DDIM renders ({config.render_steps} steps) of identity {planted} of "
        f"{config.n_identities}; renders' nearest true picture is their own for {render_accuracy:.0%} of "
        f"identities; codec error {codec_error:.4f}")

    probe = LossProbe(adapter, basis, seen, config.probe_samples, config.templates, seed=config.seed + 7)
    loss_planted = probe(identities[planted])
    loss_others = [probe(identities[i]) for i in others]
    loss_random = [probe(c) for c in random_coefficients(8, k, torch.Generator().manual_seed(config.seed + 99))]
    log(f"probe loss at c* {loss_planted:.4f}; at the other identities {min(loss_others):.4f}-"
        f"{max(loss_others):.4f}; at random coefficients {min(loss_random):.4f}-{max(loss_random):.4f}")

    report = {
        "config": {key: (list(value) if isinstance(value, tuple) else value) for key, value in asdict(config).items()},
        "torch_threads": torch.get_num_threads(),
        "prediction_type": adapter.prediction_type,
        "basis": {"k": k, "width": basis.width, "rank": list(basis.rank), "names_used": basis.names_used},
        "planted_index": planted,
        "identities": identities.tolist(),
        "train_losses": train_losses,
        "train_loss_first_20": _mean(train_losses[:20]),
        "train_loss_last_20": _mean(train_losses[-20:]),
        "render_truth_mse": render_truth,
        "render_accuracy": render_accuracy,
        "truth_energy": truths.pow(2).mean().item(),
        "codec_max_error": codec_error,
        "loss_at_planted": loss_planted,
        "loss_at_others": loss_others,
        "loss_at_random": loss_random,
        "modes": {},
    }
    feature = F.normalize(torch.randn(config.feature_dim, generator=torch.Generator().manual_seed(config.seed + 3)),
                          dim=0)
    features = feature.expand(len(images), 2, -1).contiguous()  # (photos, face/mirror, D)
    return PlantedWorld(adapter, basis, identities, planted, others, seeds, renders, truths, images, features, probe,
                        report, train_seconds, render_seconds)


def run_experiment(config: Config, log=print) -> dict:
    """Everything above; returns the figures (see ``print_table``)."""
    started = time.perf_counter()
    world = plant_identity(config, log)
    adapter, basis, identities, planted, others = (world.adapter, world.basis, world.identities, world.planted,
                                                   world.others)
    seeds, renders, truths, images, features, probe = (world.seeds, world.renders, world.truths, world.images,
                                                       world.features, world.probe)
    targets = renders[planted]
    report = world.report
    for mode in config.modes:
        t0 = time.perf_counter()
        learning_rate = config.direct_lr if mode == "direct" else config.paper_lr
        options = TuneOptions(steps=config.tune_steps, learning_rate=learning_rate, batch_size=config.tune_batch,
                              seed=config.seed, mode=mode, augment=False, templates=list(config.templates),
                              report_every=10, dtype="fp32", loss_mask="none")  # latent patterns: no face to weight
        mode_features = features if mode == "paper" else None
        result = tune(adapter, basis, images, mode_features, options)
        tune_seconds = time.perf_counter() - t0
        # the start: the first step's coefficients (the EMA's first value is the untrained output)
        start = tune(adapter, basis, images, mode_features, replace(options, steps=1)).coefficients
        control = tune(adapter, basis, images, mode_features, replace(options, learning_rate=CONTROL_LR)) \
            if config.control else None
        learned = F.normalize(result.coefficients, dim=-1)
        losses = result.losses
        first, last = _fifths(losses)
        learned_render = render(adapter, basis, learned, seeds, config.render_steps)
        start_render = render(adapter, basis, F.normalize(start, dim=-1), seeds, config.render_steps)
        render_mse = [F.mse_loss(learned_render, renders[i]).item() for i in range(config.n_identities)]
        figures = {
            "tune_seconds": tune_seconds,
            "losses": losses,
            "loss_first_20pct": first,
            "loss_last_20pct": last,
            "probe_loss_start": probe(start),
            "probe_loss_learned": probe(learned),
            "cosine_start_planted": cosine(start, identities[planted]),
            "cosine_learned_planted": cosine(learned, identities[planted]),
            "cosine_learned_planted_per_token": F.cosine_similarity(learned, identities[planted], dim=-1).tolist(),
            "cosine_learned_others": [cosine(learned, identities[i]) for i in others],
            "cosine_planted_others": [cosine(identities[planted], identities[i]) for i in others],
            "render_mse_to_identities": render_mse,
            "render_nearest_identity": int(np.argmin(render_mse)),
            "render_mse_start_to_targets": F.mse_loss(start_render, targets).item(),
            "render_mse_learned_to_truth": F.mse_loss(learned_render, truths[planted].expand_as(learned_render)).item(),
            "render_mse_start_to_truth": F.mse_loss(start_render, truths[planted].expand_as(start_render)).item(),
            "learned_coefficients": learned.tolist(),
            "ema_norm_per_token": result.coefficients.norm(dim=-1).tolist(),  # the EMA of unit vectors, as exported
        }
        if control is not None:
            control_first, control_last = _fifths(control.losses)
            fifth = max(1, len(losses) // 5)
            figures.update({
                "control_losses": control.losses,
                "control_loss_first_20pct": control_first,
                "control_loss_last_20pct": control_last,
                "paired_last_20pct_difference": _mean([
                    tuned - same_draws for tuned, same_draws in zip(losses[-fifth:], control.losses[-fifth:])]),
            })
        report["modes"][mode] = figures
        log(f"[{mode}] {config.tune_steps} steps in {tune_seconds:.1f} s: loss {first:.4f} -> {last:.4f}; "
            f"cosine with c* {figures['cosine_start_planted']:+.3f} -> {figures['cosine_learned_planted']:+.3f}")
    report["seconds"] = time.perf_counter() - started
    report["train_seconds"] = world.train_seconds
    report["render_seconds"] = world.render_seconds
    return report


def print_table(report: dict) -> None:
    planted = report["planted_index"]
    n = len(report["render_truth_mse"])
    others = [i for i in range(n) if i != planted]
    config = report["config"]
    print()
    print(f"{config['architecture']} ({report['prediction_type']}), seed {config['seed']}, K={report['basis']['k']}: "
          f"identity {planted} of {n} planted; UNet taught {config['train_steps']} steps "
          f"(loss {report['train_loss_first_20']:.3f} -> {report['train_loss_last_20']:.3f}); "
          f"{report['seconds']:.0f} s in all, {report['torch_threads']} thread(s)")
    modes = report["modes"]
    head = f"{'figure':52s}" + "".join(f"{mode:>10s}" for mode in modes)
    print(head)
    print("-" * len(head))

    def row(label, value, fmt="{:10.4f}"):
        print(f"{label:52s}" + "".join(fmt.format(value(m)) for m in modes.values()))

    row("tuning loss, first 20% of steps", lambda m: m["loss_first_20pct"])
    row("tuning loss, last 20% of steps", lambda m: m["loss_last_20pct"])
    if all("control_losses" in m for m in modes.values()):
        row("control (lr 1e-9, same draws), first 20%", lambda m: m["control_loss_first_20pct"])
        row("control (lr 1e-9, same draws), last 20%", lambda m: m["control_loss_last_20pct"])
        row("last 20%: tuned minus control, paired", lambda m: m["paired_last_20pct_difference"])
    row("probe loss at the start", lambda m: m["probe_loss_start"])
    row("probe loss at the learned coefficients", lambda m: m["probe_loss_learned"])
    row("probe loss at c* (planted)", lambda m: report["loss_at_planted"])
    row("probe loss at the best other identity", lambda m: min(report["loss_at_others"]))
    row("probe loss at random coefficients (mean of 8)", lambda m: _mean(report["loss_at_random"]))
    row("cosine(start, c*)", lambda m: m["cosine_start_planted"])
    row("cosine(learned, c*)", lambda m: m["cosine_learned_planted"])
    row("max cosine(learned, another identity)", lambda m: max(m["cosine_learned_others"]))
    row("max cosine(c*, another identity)", lambda m: max(m["cosine_planted_others"]))
    row("render MSE, learned vs targets (same seeds)", lambda m: m["render_mse_to_identities"][planted])
    row("render MSE, learned vs nearest other identity",
        lambda m: min(m["render_mse_to_identities"][i] for i in others))
    row("render MSE, start vs targets", lambda m: m["render_mse_start_to_targets"])
    row("render MSE, learned vs c*'s true picture", lambda m: m["render_mse_learned_to_truth"])
    row("render MSE, start vs c*'s true picture", lambda m: m["render_mse_start_to_truth"])
    row("identity nearest to the learned render", lambda m: m["render_nearest_identity"], "{:10d}")
    row("norm of the returned (EMA) coefficients, mean", lambda m: _mean(m["ema_norm_per_token"]))
    row("tuning seconds", lambda m: m["tune_seconds"], "{:10.1f}")
    print(f"(true pictures' mean square {report['truth_energy']:.3f}; each identity's renders are nearest its own "
          f"true picture for {report['render_accuracy']:.0%} of identities)")


#: (figure, label, better when higher) summarised over seeds: the mean and the worst seed's value
SUMMARY_FIGURES = (
    ("cosine_learned_planted", "cosine(learned, c*)", True),
    ("cosine_margin", "cosine(learned, c*) - max cosine(learned, other)", True),
    ("found", "render nearest the planted identity (1 = yes)", True),
    ("probe_ratio", "probe loss at learned / at c*", False),
)


def seed_figures(report: dict, mode: str) -> dict:
    """The figures ``SUMMARY_FIGURES`` names, for one seed's report and one mode."""
    figures = report["modes"][mode]
    return {
        "cosine_learned_planted": figures["cosine_learned_planted"],
        "cosine_margin": figures["cosine_learned_planted"] - max(figures["cosine_learned_others"]),
        "found": float(figures["render_nearest_identity"] == report["planted_index"]),
        "probe_ratio": figures["probe_loss_learned"] / report["loss_at_planted"],
    }


def summarise_seeds(reports: Sequence[dict]) -> dict:
    """Per mode and figure: mean over the seeds, the worst value and which seed gave it."""
    summary = {}
    for mode in reports[0]["modes"]:
        per_seed = [(report["config"]["seed"], seed_figures(report, mode)) for report in reports]
        summary[mode] = {}
        for key, _, higher in SUMMARY_FIGURES:
            values = [(figures[key], seed) for seed, figures in per_seed]
            worst_value, worst_seed = (min if higher else max)(values)
            summary[mode][key] = {"mean": _mean([value for value, _ in values]), "worst": worst_value,
                                  "worst_seed": worst_seed, "per_seed": [value for value, _ in values]}
    return summary


def print_summary(summary: dict, seeds: Sequence[int]) -> None:
    print()
    print(f"over seeds {', '.join(map(str, seeds))}: mean (worst, its seed)")
    for mode, figures in summary.items():
        for key, label, _ in SUMMARY_FIGURES:
            entry = figures[key]
            print(f"[{mode}] {label:52s} {entry['mean']:8.3f}  ({entry['worst']:.3f}, seed {entry['worst_seed']})")


def run_seeds(configs: Sequence[Config], log=print) -> dict:
    """``run_experiment`` for each config (one per seed), and the summary over them."""
    reports = [run_experiment(config, log) for config in configs]
    return {"seeds": [config.seed for config in configs], "reports": reports, "summary": summarise_seeds(reports)}


def save_plot(report: dict, path: str) -> bool:
    """Loss curves as a PNG; False (and no file) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False

    def smooth(values, width=20):
        values = np.asarray(values, dtype=float)
        return values if len(values) < width else np.convolve(values, np.ones(width) / width, mode="valid")

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    axes[0].plot(smooth(report["train_losses"]), color="grey")
    axes[0].set_title(f"teaching the {report['config']['architecture']} UNet the toy identities")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel(f"{report['prediction_type']} MSE (moving mean of 20)")
    colours = {"direct": "tab:blue", "paper": "tab:orange"}
    for mode, figures in report["modes"].items():
        colour = colours.get(mode)
        axes[1].plot(smooth(figures["losses"]), color=colour, label=f"tune() {mode}")
        if "control_losses" in figures:
            axes[1].plot(smooth(figures["control_losses"]), color=colour, linestyle=":", alpha=0.7,
                         label=f"{mode} control (lr 1e-9)")
    axes[1].axhline(report["loss_at_planted"], color="green", linestyle="--", label="probe loss at c*")
    axes[1].axhline(min(report["loss_at_others"]), color="red", linestyle="--", label="probe loss, best other identity")
    axes[1].set_title(f"tuning on renders of planted identity {report['planted_index']}")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("moving mean of 20")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one world each (default 0,1,2)")
    parser.add_argument("--arch", default="tiny-sd2", choices=("tiny-sd1", "tiny-sd2"))
    parser.add_argument("--quick", action="store_true", help="the smaller configuration the test runs")
    parser.add_argument("--names", help="celebrity names file for the basis (default: a built-in dozen)")
    parser.add_argument("--k", type=int, help="basis size K (a power of two; default 4)")
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--tune-steps", type=int)
    parser.add_argument("--no-control", action="store_true", help="skip the lr-1e-9 control runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a busy machine)")
    parser.add_argument("--json", help="write every figure and loss curve here")
    parser.add_argument("--plot", help="save the loss curves as a PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = []
    for seed in (int(value) for value in args.seeds.split(",")):
        if args.quick:
            config = replace(Config.quick(seed), architecture=args.arch)
        else:
            config = Config.for_architecture(args.arch, seed)
        config = replace(config, names_file=args.names)
        if args.k:
            config = replace(config, k=args.k)
        if args.train_steps:
            config = replace(config, train_steps=args.train_steps)
        if args.tune_steps:
            config = replace(config, tune_steps=args.tune_steps)
        if args.no_control:
            config = replace(config, control=False)
        configs.append(config)
    result = run_seeds(configs)
    for report in result["reports"]:
        print_table(report)
    print_summary(result["summary"], result["seeds"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"figures written to {args.json}")
    if args.plot and save_plot(result["reports"][0], args.plot):
        print(f"plot (seed {result['seeds'][0]}) written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
