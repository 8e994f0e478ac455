"""How many steps does tuning need? Loss curves and the learned identity against the step count.

The presets are Fast 200 / Balanced 400 / Best 800 steps at the authors'
constant learning rate 1e-2 with a 0.99 EMA of the coefficients. Whether
fewer steps (or another learning rate) give the same result cannot be read
from the training loss alone: it is dominated by the random timestep of each
step. This study uses the planted-identity world of ``planted_identity.py``
(a tiny model taught to read the embedding, one identity planted, its renders
handed to ``tune()``) where the answer is known, and follows one long run per
(seed, learning rate) step by step (``TuneProgress.coefficients``). Because
the learning rate is constant, the first N steps of a long run are exactly
the N-step run, so one run gives every step count.

For each step count N it reports, for three ways of reading the result:

- ``ema_original``: the authors' estimate, EMA 0.99 started at the first
  step's (untrained) output;
- ``ema``: the engine's estimate, the same 0.99 EMA started at zero and
  divided by 1 - 0.99^n (Adam's bias correction): the same ~100-step window,
  but no weight left on the untrained first output;
- ``ema_warm``: EMA with the usual warm-up, decay min(0.99, (1 + n) / (10 + n)),
  so early, untrained coefficients are forgotten sooner in short runs;
- ``raw``: the last step's coefficients (no averaging),

the probe loss (the diffusion loss on the targets with fixed noise, timesteps
and captions) as the share of the start's excess over the plant that is left,
``gap = (probe(N) - probe(c*)) / (probe(start) - probe(c*))``, and the cosine
with the plant c*.

Usage::

    PYTHONPATH=. python benchmarks/schedule_study.py [--seeds 0 1 2] [--lrs 0.01 0.02 0.03]
        [--steps 800] [--json out.json] [--plot out.png] [--threads 1]

About 2 minutes per seed with three learning rates on 2 CPU cores
(``--threads 1``). The figures describe this toy world, not a real Stable
Diffusion checkpoint: no real weights can be had here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import planted_identity as bench  # noqa: E402  (the world, the probe and the plant)
from celebbasis_ext.tuning import TuneOptions, tune  # noqa: E402

CHECKPOINTS = (25, 50, 100, 150, 200, 300, 400, 600, 800)
ESTIMATORS = ("ema_original", "ema", "ema_warm", "raw")


def estimates(trajectory: torch.Tensor, decay: float = 0.99) -> dict[str, torch.Tensor]:
    """Per step n (1-based), the readings of a run's coefficients (steps, 2, K)."""
    ema = torch.empty_like(trajectory)
    warm = torch.empty_like(trajectory)
    unbiased = torch.empty_like(trajectory)
    running = torch.zeros_like(trajectory[0])
    for index, current in enumerate(trajectory):
        running = decay * running + (1 - decay) * current
        unbiased[index] = running / (1 - decay ** (index + 1))
        if index == 0:
            ema[0] = warm[0] = current
            continue
        ema[index] = decay * ema[index - 1] + (1 - decay) * current
        warm_decay = min(decay, (1 + index) / (10 + index))
        warm[index] = warm_decay * warm[index - 1] + (1 - warm_decay) * current
    return {"ema_original": ema, "ema": unbiased, "ema_warm": warm, "raw": trajectory}


def smooth(values: Sequence[float], width: int = 25) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= width:
            total -= values[index - width]
        out.append(total / min(index + 1, width))
    return out


def study_seed(seed: int, lrs: Sequence[float], steps: int, batch_size: int, log=print) -> dict:
    config = replace(bench.Config.for_architecture("tiny-sd2", seed), control=False, modes=("paper",))
    world = bench.plant_identity(config, log)
    planted = world.identities[world.planted]
    probe_planted = world.probe(planted)
    checkpoints = [n for n in CHECKPOINTS if n <= steps] + ([steps] if steps not in CHECKPOINTS else [])
    runs = {}
    for lr in lrs:
        options = TuneOptions(steps=steps, learning_rate=lr, batch_size=batch_size, seed=seed, mode="paper",
                              augment=False, templates=list(config.templates), report_every=1, dtype="fp32")
        trajectory: list[torch.Tensor] = []
        started = time.perf_counter()
        result = tune(world.adapter, world.basis, world.images, world.features, options,
                      progress=lambda update: trajectory.append(update.coefficients[0]))
        seconds = time.perf_counter() - started
        readings = estimates(torch.stack(trajectory))
        torch.testing.assert_close(readings["ema"][-1], result.coefficients)  # the engine's own EMA, reproduced
        probe_start = world.probe(trajectory[0])
        excess = probe_start - probe_planted
        table = {}
        for name in ESTIMATORS:
            rows = []
            for n in checkpoints:
                coefficients = F.normalize(readings[name][n - 1], dim=-1)
                probe = world.probe(coefficients)
                rows.append({"steps": n, "probe": probe, "gap": (probe - probe_planted) / excess,
                             "cosine": bench.cosine(coefficients, planted)})
            table[name] = rows
        runs[str(lr)] = {"seconds": seconds, "losses": result.losses, "probe_start": probe_start, "table": table}
        final = table["ema"][-1]
        log(f"seed {seed} lr {lr:g}: {steps} steps in {seconds:.1f} s; EMA at {steps}: gap {final['gap']:.3f}, "
            f"cosine {final['cosine']:.3f}")
    return {"seed": seed, "planted_index": world.planted, "probe_at_planted": probe_planted, "runs": runs}


def summarise(seeds: list[dict], lrs: Sequence[float], estimator: str, key: str) -> dict[str, dict[int, float]]:
    """Mean over seeds of ``key`` at each step count, per learning rate."""
    out = {}
    for lr in lrs:
        rows = [seed["runs"][str(lr)]["table"][estimator] for seed in seeds]
        out[str(lr)] = {row["steps"]: sum(r[i][key] for r in rows) / len(rows)
                        for i, row in enumerate(rows[0])}
    return out


def print_tables(report: dict) -> None:
    lrs, seeds = report["lrs"], report["seeds"]
    steps = [row["steps"] for row in seeds[0]["runs"][str(lrs[0])]["table"]["ema"]]
    for key, label in (("gap", "probe-loss gap left (0 = at the plant)"), ("cosine", "cosine with the plant")):
        print(f"\n{label}, mean of {len(seeds)} seeds")
        print(f"{'lr':>6} {'reading':>9} " + " ".join(f"{n:>6}" for n in steps))
        for estimator in ESTIMATORS:
            means = summarise(seeds, lrs, estimator, key)
            for lr in lrs:
                print(f"{lr:>6g} {estimator:>9} " + " ".join(f"{means[str(lr)][n]:6.3f}" for n in steps))


def save_plot(report: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    lrs, seeds = report["lrs"], report["seeds"]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.4))
    colours = {"ema_original": "tab:red", "ema": "tab:blue", "ema_warm": "tab:green", "raw": "tab:grey"}
    styles = ["-", "--", ":", "-."]
    for index, lr in enumerate(lrs):
        style = styles[index % len(styles)]
        curves = [seed["runs"][str(lr)]["losses"] for seed in seeds]
        mean = [sum(values) / len(values) for values in zip(*curves)]
        left.plot(range(1, len(mean) + 1), smooth(mean), style, label=f"lr {lr:g}")
        for estimator, colour in colours.items():
            gap = summarise(seeds, lrs, estimator, "gap")[str(lr)]
            cos = summarise(seeds, lrs, estimator, "cosine")[str(lr)]
            label = f"{estimator}, lr {lr:g}"
            middle.plot(list(gap), list(gap.values()), style, color=colour, marker=".", label=label)
            right.plot(list(cos), list(cos.values()), style, color=colour, marker=".", label=label)
    steps = [row["steps"] for row in seeds[0]["runs"][str(lrs[0])]["table"]["ema"]]
    left.set(title="training loss (25-step mean, mean of seeds)", xlabel="step", ylabel="loss")
    middle.set(title="probe-loss gap left (0 = at the plant)", xlabel="steps (log)", xscale="log")
    middle.axhline(0, color="black", linewidth=0.5)
    right.set(title="cosine with the plant", xlabel="steps (log)", xscale="log", ylim=(0, 1.02))
    for axis in (middle, right):
        axis.set_xticks(steps)
        axis.set_xticklabels([str(n) for n in steps], fontsize=7)
        axis.minorticks_off()
    for axis in (left, middle, right):
        axis.grid(alpha=0.3)
    left.legend()
    right.legend(fontsize=6, ncol=2, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.02, 0.03])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=2, help="the engine's default, as the presets use")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a busy machine)")
    parser.add_argument("--json", help="write every figure and loss curve here")
    parser.add_argument("--plot", help="save the curves as a PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or any(not math.isfinite(lr) or lr <= 0 for lr in args.lrs):
        parser.error("steps and learning rates must be positive")
    started = time.perf_counter()
    seeds = [study_seed(seed, args.lrs, args.steps, args.batch_size) for seed in args.seeds]
    report = {"lrs": args.lrs, "steps": args.steps, "batch_size": args.batch_size, "seeds": seeds,
              "torch_threads": torch.get_num_threads(), "seconds": time.perf_counter() - started}
    print_tables(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"figures written to {args.json}")
    if args.plot and save_plot(report, args.plot):
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
