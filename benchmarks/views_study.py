"""Which training views let tuning find the identity? Every views x loss-mask combination, three worlds.

Worlds where the right answer is known:

- ``faces-photo`` (planted_faces.py, world A): a tiny SD1 taught to draw six
  planted codes as six real people, each only in the photo's own framing.
- ``faces-mixed`` (world B): world A taught further so that 35% of its views
  show the head small on black, as the authors' training views do (with the
  engine's "small" captions; every other caption keeps the photo's framing).
- ``toy`` (planted_identity.py): the latent-quadrant world, one identity
  planted per seed (its own set-up, now with the training views users get).

Each run is what a user runs: ``tune()`` with augmentation on, paper mode
(the face world's features are dlib's, read from the photo by the engine's
own ``prepare_faces``; the toy world's a fixed random feature), the default
learning rate and batch. In the face worlds each seed tunes ``--people`` of
the six people from their photos, the next ones for the next seed (with 2 a
seed, seeds 0-2 cover all six once). A reference row per world ("target")
turns augmentation off and gives tuning the world's own picture of the person
(in the photo's framing) as its only view: how well tuning can do in that
world at all. Measured per run:

- recovery, judged on renders of the learned token (DDIM, the same seeds for
  every code): by dlib (the person whose photo the renders' faces are most
  like, over all six) and by pixels (the person whose planted-code renders
  are nearest); and the cosine of the learned coefficients to the planted
  ones (mean over the two tokens);
- the guard: how much two prompts ("a photo of {}" and the world's steering
  prompt) change the render with the learned token, over how much they change
  it with the planted code; 1 = as steerable as the true identity. The toy
  world's prompts steer nothing, so it has no guard figure.

Usage::

    PYTHONPATH=. python benchmarks/views_study.py [--quick] [--seeds 0,1,2] [--json benchmarks/results/views_study.json]

Measured on this busy 2-core machine, one thread per world: 14 minutes for a face world (3 seeds,
``--people 2``, 35-50 s a combination; 20-25 at ``--steps 400``), 15 for the toy world; world B's
first build 4 minutes more (it goes on from world A's cached UNet); ``--quick`` a few.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import planted_faces  # noqa: E402
import planted_identity  # noqa: E402
from celebbasis_ext.augment import LOSS_MASKS, VIEW_MODES  # noqa: E402
from celebbasis_ext.pipeline import prepare_faces  # noqa: E402
from celebbasis_ext.tuning import TuneOptions, tune  # noqa: E402

WORLDS = ("faces-photo", "faces-mixed", "toy")
COMBINATIONS = tuple((views, mask) for views in VIEW_MODES for mask in LOSS_MASKS)
REFERENCE = ("target", "none")
"""The reference row: augmentation off and the world's own picture of the person as the only view
(what the world draws, exactly): how well tuning can do here at all."""


@dataclass
class StudyConfig:
    seeds: Sequence[int] = (0, 1, 2)
    worlds: Sequence[str] = WORLDS
    combinations: Sequence[tuple] = COMBINATIONS
    face_tune_steps: int = 200  # the Fast preset
    render_seeds: Sequence[int] = (101, 102, 103)
    people_per_seed: int = 3  # face worlds: seed s tunes people s*3, s*3+1, ... (mod 6): three seeds cover all
    reference: bool = True
    toy_quick: bool = False
    face_quick: bool = False

    @classmethod
    def quick(cls) -> "StudyConfig":
        return cls(seeds=(0,), face_tune_steps=60, render_seeds=(101, 102), people_per_seed=2, toy_quick=True,
                   face_quick=True)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


def dlib_pick(table: np.ndarray) -> Optional[int]:
    """The person the renders' faces are most like (mean over the renders with a face); None without a face."""
    seen = ~np.isnan(table[:, 0])
    return int(np.argmax(table[seen].mean(axis=0))) if seen.any() else None


def _pixels(images) -> torch.Tensor:
    return torch.stack([planted_faces.pixels(image) for image in images])


# -- the face worlds -------------------------------------------------------------------------------

def face_world_runs(framing: str, config: StudyConfig, log=print) -> list[dict]:
    """One taught world per framing; every person tuned per seed and combination."""
    world = planted_faces.build_face_world(seed=0, framing=framing, quick=config.face_quick, log=log,
                                           cache_dir=planted_faces.default_cache_dir())
    judge = world.judge
    count = len(world.codes)
    prepared = [prepare_faces([world.photos[i]], encoder=judge) for i in range(count)]
    seeds = list(config.render_seeds)
    planted = [_pixels(world.render(world.codes[j], seeds)) for j in range(count)]
    steer = [_pixels(world.render(world.codes[j], seeds, planted_faces.STEER_PROMPT)) for j in range(count)]
    planted_picks = [dlib_pick(world.likeness(world.render(world.codes[j], seeds))) for j in range(count)]
    log(f"  planted codes: dlib names the right person for {sum(p == j for j, p in enumerate(planted_picks))}/{count}")
    runs = []
    combinations = list(config.combinations) + ([REFERENCE] if config.reference else [])
    for seed in config.seeds:
        people = [(seed * config.people_per_seed + i) % count for i in range(config.people_per_seed)]
        for views, mask in combinations:
            started = time.perf_counter()
            rows = []
            for person in people:
                faces = prepared[person]
                reference = (views, mask) == REFERENCE
                options = TuneOptions(steps=config.face_tune_steps, seed=seed, views="paper" if reference else views,
                                      loss_mask=mask, augment=not reference, dtype="fp32")
                photos = [world.targets[person]] if reference else faces.photos
                result = tune(world.adapter, world.basis, photos, faces.features, options)
                learned = F.normalize(result.coefficients, dim=-1)
                images = world.render(learned, seeds)
                renders = _pixels(images)
                table = world.likeness(images)
                distances = [F.mse_loss(renders, planted[j]).item() for j in range(count)]
                steered = _pixels(world.render(learned, seeds, planted_faces.STEER_PROMPT))
                moved = (renders - steered).abs().mean().item()
                moved_planted = (planted[person] - steer[person]).abs().mean().item()
                rows.append({
                    "person": person,
                    "cosine": cosine(learned, world.codes[person]),
                    "dlib_pick": dlib_pick(table),
                    "dlib_faces": int((~np.isnan(table[:, 0])).sum()),
                    "dlib_likeness": [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in table],
                    "pixel_pick": int(np.argmin(distances)),
                    "pixel_mse": [round(v, 5) for v in distances],
                    "guard_ratio": moved / max(moved_planted, 1e-8),
                    "final_loss": float(np.mean(result.losses[-20:])),
                })
            runs.append(_summarise_run(f"faces-{framing}", seed, views, mask, rows, time.perf_counter() - started))
            log(_run_line(runs[-1]))
    return runs


def _summarise_run(world: str, seed: int, views: str, mask: str, rows: list, seconds: float) -> dict:
    judged = all("dlib_pick" in row for row in rows)
    guarded = all("guard_ratio" in row for row in rows)
    return {
        "world": world, "seed": seed, "views": views, "loss_mask": mask, "seconds": round(seconds, 1),
        # a render dlib finds no face in counts as not identified
        "dlib_identified": float(np.mean([row["dlib_pick"] == row["person"] for row in rows])) if judged else None,
        "pixel_identified": float(np.mean([row["pixel_pick"] == row["person"] for row in rows])),
        "cosine": float(np.mean([row["cosine"] for row in rows])),
        "guard_ratio": float(np.mean([row["guard_ratio"] for row in rows])) if guarded else None,
        "guard_ratio_min": float(np.min([row["guard_ratio"] for row in rows])) if guarded else None,
        "dlib_face_share": float(np.mean([row["dlib_faces"] for row in rows]) / len(rows[0]["dlib_likeness"]))
        if judged else None,
        "people": rows,
    }


def _run_line(run: dict) -> str:
    guard = "" if run["guard_ratio"] is None else f", guard {run['guard_ratio']:.2f}"
    dlib = "" if run["dlib_identified"] is None else f"dlib {run['dlib_identified']:.2f}, "
    return (f"  {run['world']} seed {run['seed']} {run['views']:>6s} / {run['loss_mask']:4s}: {dlib}"
            f"pixels {run['pixel_identified']:.2f}, cosine {run['cosine']:+.2f}{guard} ({run['seconds']:.0f} s)")


# -- the toy world ---------------------------------------------------------------------------------

def toy_world_runs(config: StudyConfig, log=print) -> list[dict]:
    """planted_identity.py's world, one per seed, tuned with the training views users get."""
    runs = []
    for seed in config.seeds:
        toy = planted_identity.Config.quick(seed) if config.toy_quick else planted_identity.Config(seed=seed)
        world = planted_identity.plant_identity(toy, log=lambda *args: None)
        for views, mask in list(config.combinations) + ([REFERENCE] if config.reference else []):
            started = time.perf_counter()
            reference = (views, mask) == REFERENCE
            options = TuneOptions(steps=toy.tune_steps, learning_rate=toy.paper_lr, batch_size=toy.tune_batch,
                                  seed=seed, mode="paper", views="paper" if reference else views, loss_mask=mask,
                                  augment=not reference, templates=list(toy.templates), dtype="fp32")
            result = tune(world.adapter, world.basis, world.images, world.features, options)
            learned = F.normalize(result.coefficients, dim=-1)
            render = planted_identity.render(world.adapter, world.basis, learned, world.seeds, toy.render_steps)
            distances = [F.mse_loss(render, world.renders[i]).item() for i in range(len(world.identities))]
            row = {"person": world.planted, "cosine": cosine(learned, world.identities[world.planted]),
                   "pixel_pick": int(np.argmin(distances)),
                   "pixel_mse": [round(v, 5) for v in distances]}
            runs.append(_summarise_run("toy", seed, views, mask, [row], time.perf_counter() - started))
            log(_run_line(runs[-1]))
    return runs


# -- the summary -----------------------------------------------------------------------------------

FIGURES = ("dlib_identified", "pixel_identified", "cosine", "guard_ratio")


def summarise(runs: list[dict]) -> list[dict]:
    """Per world and combination: the mean over seeds and the worst seed of each figure."""
    table = []
    for world in dict.fromkeys(run["world"] for run in runs):
        for views, mask in dict.fromkeys((run["views"], run["loss_mask"]) for run in runs):
            chosen = [run for run in runs if (run["world"], run["views"], run["loss_mask"]) == (world, views, mask)]
            if not chosen:
                continue
            row = {"world": world, "views": views, "loss_mask": mask, "seeds": [run["seed"] for run in chosen]}
            for figure in FIGURES:
                values = [run[figure] for run in chosen if run[figure] is not None]
                row[figure] = None if not values else {"mean": float(np.mean(values)), "worst": float(np.min(values))}
            guards = [run["guard_ratio_min"] for run in chosen if run.get("guard_ratio_min") is not None]
            row["guard_ratio_lowest"] = float(np.min(guards)) if guards else None  # over every tuned person
            # the worst seed: lowest recovery (dlib where judged, else pixels), then lowest cosine
            key = "dlib_identified" if chosen[0]["dlib_identified"] is not None else "pixel_identified"
            worst = min(chosen, key=lambda run: (run[key], run["cosine"]))
            row["worst_seed"] = worst["seed"]
            table.append(row)
    return table


def markdown(table: list[dict]) -> str:
    """One table per world: recovery and cosine as mean (worst seed), the guard as mean (lowest person),
    and which seed was the worst (lowest recovery, then lowest cosine)."""
    def cell(value, fmt="{:.2f}"):
        return "-" if value is None else f"{fmt.format(value['mean'])} ({fmt.format(value['worst'])})"

    blocks = []
    for world in dict.fromkeys(row["world"] for row in table):
        lines = [f"**{world}**", "", "| views | loss mask | right person, dlib | right person, pixels | "
                 "cosine to the plant | prompt guard (lowest) | worst seed |", "|---|---|---|---|---|---|---|"]
        for row in (row for row in table if row["world"] == world):
            views = "reference: its own picture, no augmentation" if row["views"] == "target" else row["views"]
            guard = "-" if row["guard_ratio"] is None else \
                f"{row['guard_ratio']['mean']:.2f} ({row['guard_ratio_lowest']:.2f})"
            lines.append(f"| {views} | {row['loss_mask']} | {cell(row['dlib_identified'])} | "
                         f"{cell(row['pixel_identified'])} | {cell(row['cosine'], '{:+.2f}')} | {guard} | "
                         f"{row['worst_seed']} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def save_plot(table: list[dict], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    worlds = list(dict.fromkeys(row["world"] for row in table))
    fig, axes = plt.subplots(1, len(worlds), figsize=(5 * len(worlds), 3.8), squeeze=False)
    for axis, world in zip(axes[0], worlds):
        rows = [row for row in table if row["world"] == world]
        labels = [f"{row['views']}\n{row['loss_mask']}" for row in rows]
        key = "dlib_identified" if rows[0]["dlib_identified"] is not None else "pixel_identified"
        means = [row[key]["mean"] for row in rows]
        worst = [row[key]["worst"] for row in rows]
        cosines = [row["cosine"]["mean"] for row in rows]
        x = np.arange(len(rows))
        axis.bar(x - 0.2, means, 0.4, label=f"{key.replace('_', ' ')} (mean)", color="tab:blue")
        axis.scatter(x - 0.2, worst, color="black", marker="_", s=200, label="worst seed", zorder=3)
        axis.bar(x + 0.2, cosines, 0.4, label="cosine to the plant", color="tab:orange")
        axis.set_xticks(x, labels, fontsize=8)
        axis.set_ylim(-0.2, 1.05)
        axis.set_title(world)
        axis.axhline(0, color="grey", linewidth=0.5)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_study(config: StudyConfig, log=print) -> dict:
    started = time.perf_counter()
    runs = []
    for world in config.worlds:
        log(f"{world}:")
        if world == "toy":
            runs += toy_world_runs(config, log)
        else:
            runs += face_world_runs(world.split("-", 1)[1], config, log)
    table = summarise(runs)
    return {"config": {key: (list(value) if isinstance(value, tuple) else value)
                       for key, value in asdict(config).items()},
            "torch_threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - started, 1),
            "summary": table, "runs": runs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, two people, short runs (a smoke test)")
    parser.add_argument("--seeds", help="comma-separated tuning seeds (default 0,1,2)")
    parser.add_argument("--worlds", help=f"comma-separated, from {', '.join(WORLDS)}")
    parser.add_argument("--steps", type=int, help="tuning steps in the face worlds (default 200)")
    parser.add_argument("--people", type=int, help="face worlds: people tuned per seed (default 3)")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="no runs: merge these studies' runs (e.g. worlds run in two processes) and summarise")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "views_study.json"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "results" / "views_study.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = StudyConfig.quick() if args.quick else StudyConfig()
    if args.seeds:
        config = replace(config, seeds=tuple(int(seed) for seed in args.seeds.split(",")))
    if args.worlds:
        config = replace(config, worlds=tuple(args.worlds.split(",")))
    if args.steps:
        config = replace(config, face_tune_steps=args.steps)
    if args.people:
        config = replace(config, people_per_seed=args.people)
    if args.combine:
        parts = [json.loads(Path(path).read_text(encoding="utf-8")) for path in args.combine]
        runs = [run for part in parts for run in part["runs"]]
        report = {**parts[0], "summary": summarise(runs), "runs": runs,
                  "seconds": round(sum(part["seconds"] for part in parts), 1),
                  "config": {**parts[0]["config"],
                             "worlds": list(dict.fromkeys(w for part in parts for w in part["config"]["worlds"])),
                             "seeds": sorted({run["seed"] for run in runs})}}
    else:
        report = run_study(config)
    print()
    print(markdown(report["summary"]))
    print(f"(mean over seeds, worst seed in brackets; {report['seconds']:.0f} s of runs)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"figures written to {args.json}")
    if args.plot and save_plot(report["summary"], args.plot):
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
