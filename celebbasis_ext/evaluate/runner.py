"""The evaluation loop: render every (variant, prompt, people, seed), score it, write the report.

Front ends (``celebbasis eval``, the tab's Evaluate section) build an
``EvalPlan``: the variants to compare (each maps identity names to the token
written in prompts), the reference features, the prompts and seeds, the
judge, the prompt scorer and a ``render(item)`` function (``item.text`` is
the prompt with the variant's tokens, ``item.seed`` the seed). The loop
knows nothing about models or hosts.

Resumable: each image is saved (atomically) as it is rendered and its scores
appended to ``progress.jsonl`` in the report folder; a second run with the
same settings skips what is there, and extends a run given more seeds,
prompts or identities. A run with other settings (model, sampler, size,
judge, CLIP) is refused, so the report never mixes them. ``scores.json``,
``scores.csv`` and ``report.html`` are written (atomically) once all images
are scored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from ..errors import BadInput, Cancelled
from .prompts import Prompt, pairs
from .scoring import Judge, best_match_likeness, largest_face_likeness, readable_faces

JOURNAL = "progress.jsonl"
RUN_FILE = "run.json"
IMAGES = "images"


@dataclass
class Variant:
    """One thing to compare: ``tokens`` maps each identity to the token its prompts use; ``digests`` to a hash
    of its embedding (a changed file is rendered again); ``detail`` is shown in the report."""

    label: str
    tokens: dict[str, str]
    digests: dict[str, str] = field(default_factory=dict)
    detail: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        clean = re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label).strip("_.")[:40] or "variant"
        return f"{clean}-{hashlib.sha256(self.label.encode()).hexdigest()[:6]}"


@dataclass
class EvalPlan:
    """Everything one evaluation needs (see the module docstring)."""

    out_dir: Path
    variants: list[Variant]
    references: dict[str, Any]  # identity name -> the judge's reference feature, in report order
    prompts: list[Prompt]
    seeds: list[int]
    judge: Judge
    render: Callable[["EvalItem"], Any]
    prompt_scorer: Any = None
    settings: dict = field(default_factory=dict)  # what must match for a run to resume

    def items(self) -> Iterator["EvalItem"]:
        names = list(self.references)
        groups = {1: [(name,) for name in names], 2: pairs(names)}
        for variant in self.variants:
            for prompt in self.prompts:
                for people in groups[prompt.people]:
                    for seed in self.seeds:
                        yield EvalItem(variant, prompt, tuple(people), seed)


@dataclass(frozen=True)
class EvalItem:
    variant: Variant
    prompt: Prompt
    people: tuple[str, ...]
    seed: int

    @property
    def key(self) -> str:
        return f"{self.variant.label}|{self.prompt.key}|{'+'.join(self.people)}|{self.seed}"

    @property
    def image(self) -> str:
        """The image's path inside the report folder (forward slashes: also its URL in report.html)."""
        who = "+".join(self.people)
        return f"{IMAGES}/{self.variant.slug}/{self.prompt.set}/p{self.prompt.index:03d}-{who}-s{self.seed}.png"

    @property
    def text(self) -> str:
        """The prompt as rendered: each slot filled with the variant's token for that person."""
        return self.prompt.fill([self.variant.tokens[name] for name in self.people])

    @property
    def digests(self) -> dict:
        return {name: self.variant.digests.get(name, "") for name in self.people}


@dataclass
class EvalProgress:
    done: int
    total: int
    rendered: int  # rendered in this run (the rest were there)
    eta_seconds: Optional[float]
    label: str


@dataclass
class EvalOutcome:
    records: list[dict]
    summary: dict
    files: dict[str, Path]
    rendered: int
    seconds: float


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)

    _atomic_write(path, write)


def check_resumable(out_dir: Path, settings: dict, only: Optional[Sequence[str]] = None) -> None:
    """Refuse a report folder that holds a run with other settings (before anything is written); ``only``:
    compare these keys alone (a check before the model is loaded)."""
    run_file = out_dir / RUN_FILE
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir} is a file; give --out a folder")
    if not run_file.is_file():
        if out_dir.is_dir() and any(out_dir.iterdir()):
            raise BadInput(f"{out_dir} is not empty and holds no evaluation: choose a new or empty folder")
        return
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError, AttributeError):
        raise BadInput(f"{run_file} is unreadable: choose another folder") from None
    keys = sorted(set(previous) | set(settings)) if only is None else list(only)
    changed = [key for key in keys if previous.get(key) != settings.get(key)]
    if changed:
        first = changed[0]
        raise BadInput(f"{out_dir} holds an evaluation with other settings ({first}: {previous.get(first)!r} -> "
                       f"{settings.get(first)!r}); choose another folder to compare, or the same settings to resume")


def open_report_folder(out_dir: Path, settings: dict) -> None:
    """Check the folder (``check_resumable``), create it and record the settings: the first write of a run."""
    check_resumable(out_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / RUN_FILE).is_file():
        write_text_atomic(out_dir / RUN_FILE, json.dumps({"settings": settings}, indent=1, sort_keys=True))


def _read_journal(out_dir: Path) -> dict[str, dict]:
    records = {}
    path = out_dir / JOURNAL
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed run
        if isinstance(record, dict) and "key" in record:
            records[record["key"]] = record
    return records


def score_image(image, item: EvalItem, plan: EvalPlan) -> dict:
    """The scores of one render: faces found, each person's identity score, the prompt score."""
    features = readable_faces(image, plan.judge.encoder)
    if len(item.people) == 1:
        [name] = item.people
        identity = {name: largest_face_likeness(features, plan.references[name])}
    else:
        identity = {name: best_match_likeness(features, plan.references[name]) for name in item.people}
    prompt_score = plan.prompt_scorer.score(image, item.prompt.clip_text) if plan.prompt_scorer else None
    return {"faces": len(features), "identity": identity, "prompt_score": prompt_score}


def _record(item: EvalItem, scores: dict, seconds: float) -> dict:
    return {
        "key": item.key,
        "variant": item.variant.label,
        "set": item.prompt.set,
        "prompt_index": item.prompt.index,
        "template": item.prompt.template,
        "prompt": item.prompt.fill(list(item.people)),
        "clip_text": item.prompt.clip_text,
        "people": list(item.people),
        "seed": item.seed,
        "image": item.image,
        "digests": item.digests,
        "render_seconds": round(seconds, 3),
        **scores,
    }


def run_eval(plan: EvalPlan, progress: Optional[Callable[[EvalProgress], None]] = None,
             should_cancel: Optional[Callable[[], bool]] = None) -> EvalOutcome:
    """Render and score what is missing, then write scores.json, scores.csv and report.html."""
    from .report import write_report

    started = time.perf_counter()
    out_dir = Path(plan.out_dir)
    check_resumable(out_dir, plan.settings)
    items = list(plan.items())
    if not items:
        raise BadInput("nothing to evaluate: no identity fits these prompts (two-person prompts need two identities)")
    open_report_folder(out_dir, plan.settings)
    previous = _read_journal(out_dir)
    records, rendered, render_time = [], 0, 0.0
    with open(out_dir / JOURNAL, "a", encoding="utf-8") as journal:
        for done, item in enumerate(items, 1):
            old = previous.get(item.key)
            if old is not None and old.get("digests") == item.digests and (out_dir / old["image"]).is_file():
                records.append(old)
            else:
                if should_cancel is not None and should_cancel():
                    raise Cancelled(f"evaluation stopped after {done - 1} of {len(items)} images; run it again with "
                                    "the same settings to go on")
                tick = time.perf_counter()
                image = plan.render(item)
                path = out_dir / item.image
                _atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
                record = _record(item, score_image(image, item, plan), time.perf_counter() - tick)
                journal.write(json.dumps(record, sort_keys=True) + "\n")
                journal.flush()
                records.append(record)
                rendered += 1
                render_time += time.perf_counter() - tick
            if progress is not None:
                eta = render_time / rendered * (len(items) - done) if rendered else None
                progress(EvalProgress(done, len(items), rendered, eta, item.key))
    summary, files = write_report(out_dir, plan, records)
    return EvalOutcome(records, summary, files, rendered, time.perf_counter() - started)

