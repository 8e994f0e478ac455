"""The tab's small evaluation: a few prompts x seeds for chosen identities, rendered by the host.

The same runner, judge and report as ``celebbasis eval``; the renders come
from the service's ``render(path, name, templates, seed)``, as previews do
(the host's txt2img with the identity's file loaded under its own name, or
the standalone UI's vectors spliced into the ``{}`` slot). That takes one
person per prompt, so the tab offers the single-person and style sets; the
two-person set is for ``celebbasis eval``. The run holds the
service's lock, so it never interleaves with a tuning. Each run writes a new
report folder under ``<webui>/outputs/celebbasis-eval/`` (or beside the
embeddings folder outside a WebUI).
"""

from __future__ import annotations

import base64
import datetime
import io
import threading
from pathlib import Path
from typing import Optional, Sequence

from ..errors import BadInput
from ..identity import load_identity, output_path
from .prompts import read_prompts, spread
from .runner import EvalOutcome, EvalPlan, Variant, run_eval
from .scoring import choose_judge, tuned_with

TAB_SETS = ("single", "style")
PROMPTS = 6
SEEDS = 2
MAX_IDENTITIES = 8
THUMBNAIL = 160
_SCORERS: dict = {}
_SCORERS_LOCK = threading.Lock()


def report_root(service) -> Path:
    settings = service.settings
    if settings.webui_root:
        return Path(settings.webui_root) / "outputs" / "celebbasis-eval"
    return service.out_dir.parent / "celebbasis-eval"


def _prompt_scorer(spec: str):
    """Loaded CLIP models are kept (one at a time): loading takes seconds, the tab runs again and again."""
    from .clip_score import load_prompt_scorer

    spec = (spec or "").strip()
    with _SCORERS_LOCK:
        if spec not in _SCORERS:
            import torch

            scorer = load_prompt_scorer(spec, device="cuda" if torch.cuda.is_available() else "cpu")
            _SCORERS.clear()
            _SCORERS[spec] = scorer
        return _SCORERS[spec]


def _photos_by_name(photos: Sequence, names: Sequence[str]) -> dict[str, list]:
    """Uploaded photos matched to identities by file name (``ann.jpg`` -> ann); one identity takes them all."""
    from ..photos import describe_source

    photos = list(photos or [])
    if len(names) == 1 and photos:
        return {names[0]: photos}
    matched: dict[str, list] = {}
    for photo in photos:
        stem = Path(describe_source(photo)).stem.lower()
        for name in names:
            if stem == name.lower():
                matched.setdefault(name, []).append(photo)
    return matched


def evaluate_identities(service, names: Sequence[str], photos: Sequence = (), prompt_set: str = "single",
                        clip: Optional[str] = None, *, prompts: int = PROMPTS, seeds: int = SEEDS,
                        out_dir: Optional[Path] = None) -> tuple[EvalOutcome, EvalPlan]:
    """Render and score ``prompts`` x ``seeds`` for each identity; the report goes to a new folder."""
    names = [str(name).strip() for name in (names or []) if str(name).strip()]
    if not names:
        raise BadInput("choose one or more identities to evaluate")
    if len(names) > MAX_IDENTITIES:
        raise BadInput(f"{len(names)} identities chosen; the tab evaluates at most {MAX_IDENTITIES} "
                       "(use celebbasis eval for more)")
    if prompt_set not in TAB_SETS:
        raise BadInput(f"the tab evaluates the prompt sets {' and '.join(TAB_SETS)}; use celebbasis eval for "
                       f"{prompt_set!r}")
    chosen = spread(read_prompts(prompt_set), prompts)
    if service.render is None:
        raise BadInput("images cannot be rendered here")
    paths = {}
    for name in names:
        path = output_path(service.out_dir, name)
        if not path.is_file():
            raise BadInput(f"no identity called '{name}' in {service.out_dir}")
        paths[name] = path
    judge = choose_judge([tuned_with(load_identity(path).metadata) for path in paths.values()], "auto",
                         load=service.face_encoder)
    uploaded = _photos_by_name(photos, names)
    references = {}
    for name in names:
        reference, why = service.likeness_reference(name, judge, uploaded.get(name))
        if reference is None:
            raise BadInput(f"no reference for {name}: {why} (photos are matched by file name, e.g. {name}.jpg)")
        references[name] = reference
    scorer = _prompt_scorer(clip or "none")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = out_dir or report_root(service) / f"{stamp}-{'-'.join(names)[:60]}"

    def render(item):
        [name] = item.people
        images = list(service.render(paths[name], name, [item.prompt.template], item.seed))
        if not images:
            raise BadInput("the host rendered no image (interrupted?)")
        return images[0]

    from .standalone import file_digest

    variant = Variant("this model", {name: name for name in names},
                      {name: file_digest([path]) for name, path in paths.items()},
                      {"files": [str(path) for path in paths.values()]})
    plan = EvalPlan(out_dir=folder, variants=[variant], references=references, prompts=chosen,
                    seeds=list(range(seeds)), judge=judge, render=render, prompt_scorer=scorer,
                    settings={"renderer": "the tab's preview renderer", "judge": judge.name, "clip": clip or "none",
                              "prompt_set": prompt_set})
    outcome = service.run_exclusive(", ".join(names),
                                    lambda should_cancel: run_eval(plan, should_cancel=should_cancel))
    return outcome, plan


def thumbnail_src(folder: Path, record: dict) -> str:
    """A record's image as a small JPEG data URI (the tab shows the report inside its own page)."""
    from PIL import Image

    with Image.open(folder / record["image"]) as image:
        small = image.convert("RGB")
        small.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def report_fragment(outcome: EvalOutcome, plan: EvalPlan) -> str:
    """The report's body with the images inlined, for the tab."""
    from .report import report_body, report_meta

    meta = report_meta(plan)
    return report_body(meta, outcome.summary, outcome.records, plan.prompts,
                       image_src=lambda record: thumbnail_src(Path(plan.out_dir), record))
