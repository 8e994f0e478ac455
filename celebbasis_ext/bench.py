"""``celebbasis bench``: how long an identity takes, and how close a step is to its floor.

The floor of a step is the work no implementation can skip: the text
encoder's forward pass with the learned slots, and the UNet's forward and
backward pass, on the same inputs, with nothing else. The engine's step adds
sampling, the mapping layer, the optimiser and the EMA; ``ratio`` says what
that costs. Real-size architectures are built with random weights, which cost
exactly what the real weights cost.

Step and floor samples are taken in turn (step, floor, step, floor, ...), so
that a machine busy with something else slows both alike; the report gives
the minimum and the median of each, the ratio of the medians and of the
minima, and the load average and torch's thread count while they ran. Each
sample also records CPU time (the process's, all threads), which other
programs on the machine disturb far less than wall-clock time. A sample times
steps 2..N of its run: the first step holds one-time set-up (the optimiser's
state), not the per-step cost.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import BadInput
from .tuning import TuneOptions


@dataclass
class BenchReport:
    model: str
    family: str
    device: str
    dtype: str
    resolution: int
    batch_size: int
    steps: int
    repeats: int
    step_seconds: float  # median
    floor_seconds: float  # median
    ratio: float  # of the medians
    identity_seconds: float
    identity_steps: int
    peak_memory_mb: float
    basis_build_seconds: float
    basis_cached_seconds: float
    write_seconds: float
    warmup_seconds: float = 0.0  # the first 2-step run: includes torch.compile's compilation when on
    channels_last: bool = False
    compiled: bool = False
    torch_version: str = torch.__version__
    step_samples: list = field(default_factory=list)
    floor_samples: list = field(default_factory=list)
    step_min_seconds: float = 0.0
    floor_min_seconds: float = 0.0
    ratio_of_mins: float = 0.0
    step_cpu_samples: list = field(default_factory=list)
    floor_cpu_samples: list = field(default_factory=list)
    cpu_ratio: float = 0.0  # of the medians of CPU time
    threads: int = 0  # torch.get_num_threads() while measuring
    load_average: list = field(default_factory=list)  # 1-minute load average before and after the samples


def _load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on Windows
        return float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def floor_step_times(adapter, basis, latents, options: TuneOptions, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds per step of: text encoder forward + UNet forward + backward into the slots
    (one untimed step first, as a tuning sample leaves out its first)."""
    device = adapter.device
    batch = options.batch_size
    generator = torch.Generator("cpu").manual_seed(0)
    alphas = adapter.alphas_cumprod()
    templates = [options.templates[0]] * batch
    learned = basis.mean.to(device).expand(batch, -1, -1).clone().requires_grad_(True)
    noise = torch.randn((batch, *latents.shape[1:]), generator=generator).to(device)
    timesteps = torch.randint(0, alphas.shape[0], (batch,), generator=generator).to(device)
    alpha = alphas[timesteps].view(-1, 1, 1, 1)
    noisy = alpha.sqrt() * latents[:batch] + (1 - alpha).sqrt() * noise
    from .tuning import _autocast_dtype

    autocast_dtype = _autocast_dtype(options.dtype, device, adapter.dtype)
    with adapter.tuning_session():
        for step in range(steps + 1):
            if step == 1:
                _sync(device)
                wall, cpu = time.perf_counter(), time.process_time()
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                prediction = adapter.predict(noisy, timesteps, adapter.encode_prompts(templates, learned))
            F.mse_loss(prediction.float(), noise).backward()
            learned.grad = None
        _sync(device)
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def tuning_step_times(adapter, basis, photos, features, options: TuneOptions) -> tuple[float, float]:
    """Wall and CPU seconds per step of a real tuning run, over steps 2..N: marked by its progress reports
    (at step 1 and at the last step when ``report_every`` is the step count), each after the loss is read."""
    from . import tuning

    marks = []
    tuning.tune(adapter, basis, photos, features, options,
                progress=lambda _: marks.append((time.perf_counter(), time.process_time())))
    (wall, cpu), (wall_end, cpu_end) = marks[0], marks[-1]
    return (wall_end - wall) / (options.steps - 1), (cpu_end - cpu) / (options.steps - 1)


def run_bench(adapter, model_label: str, steps: int = 20, repeats: int = 3, identity_steps: Optional[int] = None,
              options: Optional[TuneOptions] = None, log=print) -> BenchReport:
    """Measure (see module docstring); ``identity_steps`` defaults to the tab's default preset."""
    from .basis import load_or_build_basis
    from .identity import Identity, save_identity
    from .tuning import tune
    from .augment import image_to_tensor  # noqa: F401  (import cost outside the timings)
    from PIL import Image
    import numpy as np

    options = options or TuneOptions()
    if steps < 2:
        raise BadInput("the bench needs at least 2 steps per sample (the first is left out of the timing)")
    device = adapter.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tables = adapter.token_embedding_tables()
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        basis = load_or_build_basis(tables, adapter.tokenize, adapter.fingerprint(), cache_dir=cache)
        basis_build = time.perf_counter() - started
        started = time.perf_counter()
        load_or_build_basis(tables, adapter.tokenize, adapter.fingerprint(), cache_dir=cache)
        basis_cached = time.perf_counter() - started
    log(f"basis: {basis.names_used} names, K {basis.k}, built in {basis_build:.2f} s, cached load {basis_cached:.3f} s")

    photo = Image.fromarray((np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8))
    features = F.normalize(torch.randn(1, 2, 512), dim=-1)
    run = TuneOptions(**{**asdict(options), "steps": steps, "report_every": max(steps, 1)})
    started = time.perf_counter()
    tune(adapter, basis, [photo], features, TuneOptions(**{**asdict(run), "steps": 2}))  # warm-up
    warmup = time.perf_counter() - started
    log(f"warm-up (2 steps): {warmup:.1f} s")
    resolution = run.resolution or adapter.resolution
    latents = adapter.encode_images(torch.zeros(run.batch_size, 3, resolution, resolution)).float()
    step_samples, floor_samples, step_cpu, floor_cpu = [], [], [], []
    load_before = _load_average()
    for repeat in range(repeats):  # in turn, so that other work on the machine slows both alike
        wall, cpu = tuning_step_times(adapter, basis, [photo], features, run)
        step_samples.append(wall)
        step_cpu.append(cpu)
        wall, cpu = floor_step_times(adapter, basis, latents, run, steps - 1)
        floor_samples.append(wall)
        floor_cpu.append(cpu)
        log(f"sample {repeat + 1}/{repeats}: step {step_samples[-1] * 1000:.1f} ms, "
            f"floor {floor_samples[-1] * 1000:.1f} ms (CPU {step_cpu[-1] * 1000:.1f} / {floor_cpu[-1] * 1000:.1f} ms)")
    load_after = _load_average()

    if identity_steps is None:
        from .service import DEFAULT_PRESET, PRESETS

        identity_steps = PRESETS[DEFAULT_PRESET]["steps"]
    result = tune(adapter, basis, [photo], features, TuneOptions(**{**asdict(options), "steps": identity_steps}))
    log(f"one identity ({identity_steps} steps): {result.seconds:.1f} s")
    with tempfile.TemporaryDirectory() as out:
        identity = Identity.from_embedding("benchcbx", adapter.family, result.embedding, adapter.encoder_widths,
                                           result.coefficients)
        started = time.perf_counter()
        save_identity(identity, out)
        write = time.perf_counter() - started

    step, floor = statistics.median(step_samples), statistics.median(floor_samples)
    return BenchReport(
        model=model_label, family=adapter.family.value, device=str(device), dtype=options.dtype,
        resolution=resolution, batch_size=options.batch_size, steps=steps, repeats=repeats,
        step_seconds=step, floor_seconds=floor, ratio=step / floor, identity_seconds=result.seconds,
        identity_steps=identity_steps, peak_memory_mb=_peak_memory_mb(device), basis_build_seconds=basis_build,
        basis_cached_seconds=basis_cached, write_seconds=write, step_samples=step_samples,
        floor_samples=floor_samples, warmup_seconds=warmup, channels_last=getattr(adapter, "channels_last", False),
        compiled=getattr(adapter, "compile_unet", False), step_min_seconds=min(step_samples),
        floor_min_seconds=min(floor_samples), ratio_of_mins=min(step_samples) / min(floor_samples),
        step_cpu_samples=step_cpu, floor_cpu_samples=floor_cpu,
        cpu_ratio=statistics.median(step_cpu) / statistics.median(floor_cpu),
        threads=torch.get_num_threads(), load_average=[load_before, load_after],
    )


def format_report(report: BenchReport) -> str:
    rows = [
        ("model", f"{report.model} ({report.family}) on {report.device}, {report.dtype}, {report.resolution} px, "
                  f"batch {report.batch_size}"),
        ("step", f"median {report.step_seconds * 1000:.1f} ms, min {report.step_min_seconds * 1000:.1f} ms "
                 f"({report.repeats} samples of {report.steps - 1} timed steps, in turn with the floor's)"),
        ("floor", f"median {report.floor_seconds * 1000:.1f} ms, min {report.floor_min_seconds * 1000:.1f} ms "
                  "(text encoder + UNet forward/backward)"),
        ("ratio", f"{report.ratio:.3f} (medians), {report.ratio_of_mins:.3f} (minima), "
                  f"{report.cpu_ratio:.3f} (medians of CPU time)"),
        ("machine", f"load average {report.load_average[0]:.2f} -> {report.load_average[1]:.2f}, "
                    f"{report.threads} torch threads"),
        ("one identity", f"{report.identity_seconds:.1f} s ({report.identity_steps} steps)"),
        ("peak memory", f"{report.peak_memory_mb:.0f} MB"),
        ("basis", f"{report.basis_build_seconds:.2f} s to build, {report.basis_cached_seconds:.3f} s from cache"),
        ("write file", f"{report.write_seconds * 1000:.1f} ms"),
        ("warm-up", f"{report.warmup_seconds:.1f} s (2 steps{', torch.compile' if report.compiled else ''}"
                    f"{', channels-last' if report.channels_last else ''})"),
    ]
    return "\n".join(f"{key:>13}: {value}" for key, value in rows)


def write_json(report: BenchReport, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(asdict(report), handle, indent=2)
    os.replace(tmp, path)
