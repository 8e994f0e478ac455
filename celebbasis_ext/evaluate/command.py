"""``celebbasis eval``: its options and the command (the CLI module only registers it)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from ..errors import BadInput
from .clip_score import DEFAULT_CLIP
from .scoring import JUDGES

HELP = "measure likeness and prompt following on your checkpoint: an HTML report"


def add_parser(commands, add_model_options) -> None:
    parser = commands.add_parser("eval", help=HELP, description=HELP + ". Resumable: run it again to go on.")
    add_model_options(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", nargs="+", action="append", metavar="DIR_OR_FILE",
                        help="embedding files or folders; give --embeddings again to compare another set")
    source.add_argument("--tune", action="store_true",
                        help="tune each photo first (with --preset, --set, --variant)")
    parser.add_argument("--photos", required=True,
                        help="folder of reference photos named like the identities (ann.jpg <-> ann.safetensors; "
                             "a sub-folder ann/ may hold several)")
    parser.add_argument("--prompts", nargs="+", default=["single"], metavar="SET_OR_FILE",
                        help="single, style, two-person, or a file of prompts with {} for the person (default single)")
    parser.add_argument("--seeds", type=int, default=4, help="images per prompt and identity (default 4)")
    parser.add_argument("--seed-start", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30, help="sampling steps (default 30)")
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--judge", default="auto", choices=JUDGES,
                        help="face model for the identity score (auto: one the identities were not tuned with)")
    parser.add_argument("--clip", default=DEFAULT_CLIP,
                        help=f"CLIP for the prompt score: a transformers folder or hub id (default {DEFAULT_CLIP}), "
                             "open_clip:ARCH:PRETRAINED, or none")
    parser.add_argument("--out", required=True, help="report folder (scores.json, scores.csv, report.html)")
    parser.add_argument("--preset", default="Balanced", help="with --tune: Fast, Balanced or Best")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="with --tune: a tuning option for every variant (any TuneOptions field, e.g. steps=300)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="with --tune: one variant to compare, e.g. preset=Fast or views=photo,loss_mask=face; "
                             "repeat it to compare several in one run")
    parser.add_argument("--face-encoder", default="auto", help="with --tune: auto, insightface, dlib or none")
    parser.add_argument("--models-dir", default=None, help="folder with insightface buffalo_l models")
    parser.add_argument("--allow-download", action="store_true", help="download face models if missing")
    parser.add_argument("--names", default=None, help="with --tune: your own celebrity names file")


def _eta(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "eta ?"
    seconds = int(seconds)
    return f"eta {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _tuning_bar(label: str, total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"tuning {label}", unit="step", file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(progress):
        bar.update(progress.step - bar.n)
        if math.isfinite(progress.loss):
            bar.set_postfix(loss=f"{progress.loss:.4f}")

    return update, bar.close


def _check_sampling(args) -> None:
    if not 1 <= args.steps <= 1000:
        raise BadInput(f"--steps must be from 1 to 1000, not {args.steps}")
    if not math.isfinite(args.guidance) or args.guidance < 0:
        raise BadInput(f"--guidance must be a number from 0, not {args.guidance}")
    for label, value in (("--width", args.width), ("--height", args.height)):
        if value is not None and (value % 8 or not 64 <= value <= 4096):
            raise BadInput(f"{label} must be a multiple of 8 from 64 to 4096, not {value}")


def run(args, load_model) -> int:
    """The command: checks everything, then tunes (``--tune``), renders, scores and writes the report."""
    from ..face.encoders import load_face_encoder
    from ..loading import resolve_device
    from .clip_score import load_prompt_scorer
    from .prompts import read_prompt_sets
    from .runner import EvalPlan, Variant, check_resumable, open_report_folder, run_eval
    from .scoring import choose_judge
    from .standalone import (check_names, diffusers_renderer, file_digest, find_photos, load_judge_references,
                             load_variant_tokens, match_given, model_label, seeds_from, tune_variants)
    from .variants import build_variants

    prompts = read_prompt_sets(args.prompts)
    seeds = seeds_from(args.seeds, args.seed_start)
    _check_sampling(args)
    identities = find_photos(args.photos)
    tune_specs = None
    if args.tune:
        tune_specs = build_variants(args.variant, args.set, args.preset, args.face_encoder)
        keys = list(identities.photos)
        check_names(identities, keys)
    elif args.variant or args.set or args.preset != "Balanced":
        raise BadInput("--variant, --set and --preset are tuning options: add --tune, or compare embedding sets "
                       "with --embeddings DIR_A --embeddings DIR_B")
    if any(p.people == 2 for p in prompts) and len(identities.photos) < 2:
        raise BadInput("two-person prompts need at least two identities")
    out_dir = Path(args.out).expanduser().resolve()
    model = os.path.abspath(args.model) if os.path.exists(args.model) else args.model  # a path or a hub id
    settings = {"model": model, "steps": args.steps, "guidance": args.guidance,
                "width": args.width, "height": args.height, "negative": args.negative, "clip": args.clip,
                "dtype": args.dtype, "photos": os.path.abspath(args.photos)}
    check_resumable(out_dir, settings, only=list(settings))  # before the model is loaded

    pipe, adapter = load_model(args)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    label = model_label(args.model)
    if tune_specs is None:
        given, keys, tuned = match_given(args.embeddings, identities, adapter, label)
        variant_labels = [" ".join(sources) for sources in args.embeddings]
        details = [{"embeddings": [os.path.abspath(s) for s in sources]} for sources in args.embeddings]
    else:
        tuned = set()
        for spec in tune_specs:
            kind = spec.face_encoder
            tuned.add("none" if kind == "none" else load_face_encoder(
                kind, models_dir=args.models_dir, allow_download=args.allow_download).name)
        variant_labels = [spec.label for spec in tune_specs]
        details = [spec.describe() for spec in tune_specs]
    if any(p.people == 2 for p in prompts) and len(keys) < 2:
        raise BadInput("two-person prompts need at least two identities")
    judge = choose_judge(tuned, args.judge, models_dir=args.models_dir, allow_download=args.allow_download)
    settings.update(family=adapter.family.value, judge=judge.name)
    check_resumable(out_dir, settings)
    references = load_judge_references(judge, identities, keys)
    scorer = load_prompt_scorer(args.clip, device=str(resolve_device(args.device)))
    print(f"judge: {judge.describe()}", file=sys.stderr)

    # Everything is checked: from here on files are written (and kept, so a stopped run can go on).
    open_report_folder(out_dir, settings)
    if tune_specs is not None:
        given = tune_variants(adapter, tune_specs, identities, keys, out_dir, names_file=args.names,
                              models_dir=args.models_dir, allow_download=args.allow_download,
                              progress_factory=_tuning_bar, log=lambda line: print(line, file=sys.stderr))
    tokens = load_variant_tokens(pipe, given, identities)
    variants = []
    for files, token_map, variant_label, detail in zip(given, tokens, variant_labels, details):
        digests = {identities.names[key]: file_digest([files[key], *identities.photos[key]]) for key in keys}
        variants.append(Variant(variant_label, token_map, digests, detail))
    render = diffusers_renderer(pipe, steps=args.steps, guidance=args.guidance, width=args.width,
                                height=args.height, negative=args.negative)
    plan = EvalPlan(out_dir=out_dir, variants=variants, references=references, prompts=prompts, seeds=seeds,
                    judge=judge, render=render, prompt_scorer=scorer, settings=settings)

    from tqdm import tqdm

    bar = tqdm(total=None, desc="images", unit="img", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed} {postfix}")

    def progress(update):
        bar.total = update.total
        bar.update(update.done - bar.n)
        bar.set_postfix_str(_eta(update.eta_seconds) + f", {update.rendered} rendered now")

    try:
        outcome = run_eval(plan, progress=progress)
    finally:
        bar.close()
    for variant in outcome.summary["variants"]:
        print(f"{variant['label']}: identity {variant['identity'].text()}, prompt {variant['prompt'].text()}, "
              f"face found {0 if variant['face_rate'] is None else round(100 * variant['face_rate'])}%")
    print(f"{len(outcome.records)} images ({outcome.rendered} rendered now) in {outcome.seconds:.1f} s")
    for key in ("json", "csv"):
        print(outcome.files[key])
    print(outcome.files["html"])
    return 0
