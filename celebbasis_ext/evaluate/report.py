"""The evaluation's results: summary statistics, scores.json, scores.csv and report.html.

Per identity: images, how often a face was found, the identity score's mean
over the images with a face, the prompt score's mean, each with a 95%
interval over images. Overall (per variant): the mean of the identities'
means with its interval over identities (the person is the unit that
repeats; with one identity, over images). Variants after the first also get
their paired difference to the first (same prompt, people and seed).

report.html: the settings, the summary table, a scatter plot of identity
versus prompt score (matplotlib, embedded as PNG) with the published points
of the paper's table as labelled markers, and a grid per prompt with the
scores under each image.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
from pathlib import Path
from typing import Callable, Optional, Sequence
from urllib.parse import quote

from .runner import EvalPlan, write_text_atomic
from .stats import Interval, mean_interval

#: The published comparison (CelebA-HQ, 200 faces x 20 prompts, ArcFace identity, CLIP text score): methods
#: with both numbers only. Another protocol than this evaluation's: drawn for orientation, never compared.
PUBLISHED = (
    ("Celeb Basis", 0.207, 0.268),
    ("Textual Inversion", 0.212, 0.250),
    ("DreamBooth", 0.205, 0.302),
    ("Cross-Initialization", 0.252, 0.286),
)
PUBLISHED_NOTE = "published, different protocol"
CSV_COLUMNS = ("variant", "set", "prompt_index", "prompt", "seed", "person", "people", "faces", "face_found",
               "identity_score", "prompt_score", "image")


# ---------------------------------------------------------------------------- statistics
def _contributions(records: Sequence[dict]):
    """One row per (record, person): the unit of the per-identity statistics."""
    for record in records:
        for person in record["people"]:
            yield record, person, record["identity"].get(person)


def _match_key(record: dict, person: str) -> tuple:
    return record["set"], record["prompt_index"], tuple(record["people"]), record["seed"], person


def _pooled(per_identity: dict, field: str, raw: list) -> Interval:
    """Over identities' means when there are two or more, else over the raw values."""
    means = [stats[field].mean for stats in per_identity.values() if stats[field].mean is not None]
    return mean_interval(means) if len(per_identity) >= 2 else mean_interval(raw)


def summarize(records: Sequence[dict], variants: Sequence[str], names: Sequence[str]) -> dict:
    """The summary as plain data (see the module docstring)."""
    by_variant = {label: [r for r in records if r["variant"] == label] for label in variants}
    first = variants[0] if variants else None
    baseline = {}
    for record, person, score in _contributions(by_variant.get(first, [])):
        baseline[_match_key(record, person)] = (score, record.get("prompt_score"))
    out = []
    for label in variants:
        rows = by_variant[label]
        per_identity, identity_raw, prompt_raw = {}, [], []
        diffs = {name: {"identity": [], "prompt": []} for name in names}
        for name in names:
            mine = [(r, s) for r, p, s in _contributions(rows) if p == name]
            if not mine:
                continue
            scores = [s for _, s in mine]
            prompts = [r.get("prompt_score") for r, _ in mine]
            per_identity[name] = {
                "images": len(mine),
                "face_rate": sum(s is not None for s in scores) / len(mine),
                "identity": mean_interval(scores),
                "prompt": mean_interval(prompts),
            }
            identity_raw += scores
            prompt_raw += prompts
            if label != first:
                for record, score in mine:
                    base = baseline.get(_match_key(record, name))
                    if base is None:
                        continue
                    if score is not None and base[0] is not None:
                        diffs[name]["identity"].append(score - base[0])
                    if record.get("prompt_score") is not None and base[1] is not None:
                        diffs[name]["prompt"].append(record["prompt_score"] - base[1])
        entry = {
            "label": label,
            "images": len(rows),
            "face_rate": (sum(s is not None for s in identity_raw) / len(identity_raw)) if identity_raw else None,
            "identity": _pooled(per_identity, "identity", identity_raw),
            "prompt": _pooled(per_identity, "prompt", prompt_raw),
            "identities": per_identity,
            "vs_first": None,
        }
        if label != first:
            entry["vs_first"] = {}
            for field in ("identity", "prompt"):
                means = [mean_interval(d[field]).mean for d in diffs.values() if d[field]]
                pooled = [v for d in diffs.values() for v in d[field]]
                entry["vs_first"][field] = mean_interval(means) if len(means) >= 2 else mean_interval(pooled)
        out.append(entry)
    return {"first_variant": first, "variants": out}


def _plain(value):
    """Intervals and nested containers as JSON-ready data."""
    if isinstance(value, Interval):
        return value.as_dict()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


# ---------------------------------------------------------------------------- files
def write_report(out_dir: Path, plan: EvalPlan, records: Sequence[dict]) -> tuple[dict, dict]:
    """scores.json, scores.csv and report.html in ``out_dir``; returns (summary, paths)."""
    variants = [variant.label for variant in plan.variants]
    names = list(plan.references)
    summary = summarize(records, variants, names)
    meta = report_meta(plan)
    files = {"json": out_dir / "scores.json", "csv": out_dir / "scores.csv", "html": out_dir / "report.html"}
    document = {"meta": meta, "summary": _plain(summary), "records": [_plain(r) for r in records],
                "published": [{"method": m, "identity": i, "prompt": p, "note": PUBLISHED_NOTE}
                              for m, i, p in PUBLISHED]}
    write_text_atomic(files["json"], json.dumps(document, indent=1))
    write_text_atomic(files["csv"], scores_csv(records))
    write_text_atomic(files["html"], report_html(meta, summary, records, plan.prompts,
                                                 image_src=lambda record: quote(record["image"])))
    return summary, files


def report_meta(plan: EvalPlan) -> dict:
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "settings": plan.settings,
        "judge": plan.judge.name,
        "judge_note": plan.judge.describe(),
        "prompt_scorer": getattr(plan.prompt_scorer, "name", None),
        "seeds": list(plan.seeds),
        "identities": list(plan.references),
        "prompt_sets": sorted({prompt.set for prompt in plan.prompts}),
        "prompts": len(plan.prompts),
        "variants": [{"label": v.label, **v.detail} for v in plan.variants],
    }


def scores_csv(records: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record, person, score in _contributions(records):
        writer.writerow([record["variant"], record["set"], record["prompt_index"], record["prompt"], record["seed"],
                         person, "+".join(record["people"]), record["faces"], int(score is not None),
                         "" if score is None else f"{score:.4f}",
                         "" if record.get("prompt_score") is None else f"{record['prompt_score']:.4f}",
                         record["image"]])
    return buffer.getvalue()


# ---------------------------------------------------------------------------- the plot
def scatter_png(summary: dict, judge: str) -> tuple[Optional[bytes], str]:
    """The identity-vs-prompt scatter plot as PNG bytes, or (None, why there is none)."""
    variants = [v for v in summary["variants"] if v["identity"].mean is not None and v["prompt"].mean is not None]
    if not variants:
        return None, "No plot: it needs identity and prompt scores (a face found, and a CLIP model given)."
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None, "No plot: matplotlib is not installed (pip install matplotlib)."
    figure = Figure(figsize=(7.5, 5.5), dpi=100)
    axes = figure.subplots()
    colours = [f"C{i % 10}" for i in range(len(variants))]
    for colour, variant in zip(colours, variants):
        for stats in variant["identities"].values():
            if stats["identity"].mean is not None and stats["prompt"].mean is not None:
                axes.scatter(stats["identity"].mean, stats["prompt"].mean, s=14, color=colour, alpha=0.35)
        ident, prompt = variant["identity"], variant["prompt"]
        axes.errorbar(ident.mean, prompt.mean, xerr=ident.half_width, yerr=prompt.half_width, fmt="o",
                      color=colour, capsize=3, markersize=7, label=f"{variant['label']} (this run, 95% interval)")
    for index, (method, identity, prompt) in enumerate(PUBLISHED):
        axes.scatter(identity, prompt, marker="X", s=60, color="0.35",
                     label=f"{PUBLISHED_NOTE} (paper's table)" if index == 0 else None)
        axes.annotate(method, (identity, prompt), textcoords="offset points", xytext=(5, 4), fontsize=8,
                      color="0.25")
    axes.set_xlabel(f"identity score (cosine, judged with {judge})")
    axes.set_ylabel("prompt score (CLIP image-text cosine)")
    axes.set_title("Identity vs prompt following")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue(), ""


# ---------------------------------------------------------------------------- HTML
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3} td.name,th.name{text-align:left}
.grid td{text-align:center} .grid img{width:160px;height:auto;display:block;margin:auto}
figcaption{font-size:.8em;color:#444} .note{color:#555;font-size:.9em}
.missing{color:#a33}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _cell(interval: Interval) -> str:
    return _e(interval.text())


def _rate(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def summary_table(summary: dict, names: Sequence[str]) -> str:
    variants = summary["variants"]
    head = "".join(f"<th colspan='3'>{_e(v['label'])}</th>" for v in variants)
    sub = "".join("<th>identity</th><th>face found</th><th>prompt</th>" for _ in variants)
    rows = []
    for name in names:
        cells = []
        for variant in variants:
            stats = variant["identities"].get(name)
            if stats is None:
                cells.append("<td>–</td><td>–</td><td>–</td>")
            else:
                cells.append(f"<td>{_cell(stats['identity'])}</td><td>{_rate(stats['face_rate'])}</td>"
                             f"<td>{_cell(stats['prompt'])}</td>")
        rows.append(f"<tr><td class='name'>{_e(name)}</td>{''.join(cells)}</tr>")
    overall = "".join(f"<td><b>{_cell(v['identity'])}</b></td><td>{_rate(v['face_rate'])}</td>"
                      f"<td><b>{_cell(v['prompt'])}</b></td>" for v in variants)
    rows.append(f"<tr class='overall'><td class='name'><b>overall</b></td>{overall}</tr>")
    if len(variants) > 1:
        cells = []
        for variant in variants:
            diff = variant["vs_first"]
            if diff is None:
                cells.append("<td colspan='3'>(reference)</td>")
            else:
                cells.append(f"<td>{_e(_signed(diff['identity']))}</td><td></td><td>{_e(_signed(diff['prompt']))}</td>")
        rows.append(f"<tr class='difference'><td class='name'>vs {_e(summary['first_variant'])} "
                    f"(paired)</td>{''.join(cells)}</tr>")
    return (f"<table id='summary'><tr><th class='name'>identity</th>{head}</tr><tr><th></th>{sub}</tr>"
            + "".join(rows) + "</table>")


def _signed(interval: Interval) -> str:
    if interval.mean is None:
        return "–"
    text = f"{interval.mean:+.3f}"
    return text if interval.low is None else f"{text} [{interval.low:+.3f}, {interval.high:+.3f}]"


def _caption(record: dict) -> str:
    parts = []
    for person in record["people"]:
        score = record["identity"].get(person)
        who = f"{person} " if len(record["people"]) > 1 else ""
        parts.append(f"{who}id {score:.3f}" if score is not None else f"{who}no face")
    if record.get("prompt_score") is not None:
        parts.append(f"text {record['prompt_score']:.3f}")
    return " · ".join(parts)


def grid_html(records: Sequence[dict], prompts, image_src: Callable[[dict], str]) -> str:
    """A table per prompt: a row per (variant, people), a column per seed, the scores under each image."""
    sections = []
    for prompt in prompts:
        mine = [r for r in records if r["set"] == prompt.set and r["prompt_index"] == prompt.index]
        if not mine:
            continue
        seeds = sorted({r["seed"] for r in mine})
        rows = {}
        for record in mine:
            rows.setdefault((record["variant"], tuple(record["people"])), {})[record["seed"]] = record
        body = []
        for (variant, people), by_seed in rows.items():
            cells = []
            for seed in seeds:
                record = by_seed.get(seed)
                if record is None:
                    cells.append("<td></td>")
                    continue
                cells.append(f"<td><figure><img src='{_e(image_src(record))}' alt='{_e(record['prompt'])}' "
                             f"loading='lazy'><figcaption>{_e(_caption(record))}</figcaption></figure></td>")
            body.append(f"<tr><th class='name'>{_e(variant)}<br>{_e(' + '.join(people))}</th>{''.join(cells)}</tr>")
        head = "".join(f"<th>seed {seed}</th>" for seed in seeds)
        sections.append(
            f"<section class='prompt' id='prompt-{_e(prompt.set)}-{prompt.index}'>"
            f"<h3>{_e(prompt.set)} #{prompt.index + 1}: {_e(prompt.template)}</h3>"
            f"<p class='note'>prompt score text: “{_e(prompt.clip_text)}”</p>"
            f"<table class='grid'><tr><th></th>{head}</tr>{''.join(body)}</table></section>")
    return "".join(sections)


def report_body(meta: dict, summary: dict, records: Sequence[dict], prompts,
                image_src: Callable[[dict], str]) -> str:
    """The report without <html>/<head> (the tab shows it inside its own page)."""
    png, why = scatter_png(summary, meta["judge"])
    if png is not None:
        plot = (f"<figure id='scatter'><img alt='identity vs prompt score' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                f"<figcaption>Each variant's mean with its 95% interval; small dots are identities. "
                f"Grey crosses: the paper's table ({PUBLISHED_NOTE}: CelebA-HQ, 200 faces x 20 prompts, ArcFace "
                f"identity, its own CLIP); with the dlib judge the identity axis is on another scale.</figcaption>"
                f"</figure>")
    else:
        plot = f"<p class='missing' id='scatter-missing'>{_e(why)}</p>"
    settings = meta.get("settings", {})
    rows = "".join(f"<tr><td class='name'>{_e(k)}</td><td class='name'>{_e(v)}</td></tr>"
                   for k, v in settings.items())
    variants = "".join(f"<li><b>{_e(v['label'])}</b>: {_e(json.dumps({k: x for k, x in v.items() if k != 'label'}))}"
                       f"</li>" for v in meta["variants"])
    faces = sum(1 for r in records for p in r["people"] if r["identity"].get(p) is not None)
    people = sum(len(r["people"]) for r in records)
    return (
        f"<h1>CelebBasis evaluation</h1>"
        f"<p>{len(records)} images: {len(meta['identities'])} identities, {meta['prompts']} prompts "
        f"({_e(', '.join(meta['prompt_sets']))}), seeds {_e(meta['seeds'])}, {len(meta['variants'])} variant(s); "
        f"a face was found for {faces} of {people} people. Created {_e(meta['created'])}.</p>"
        f"<p>Identity score: cosine similarity of face features, render against the reference photo, judged "
        f"with <b>{_e(meta['judge_note'])}</b>; the mean is over images where a face was found. Prompt score: "
        f"{_e(meta['prompt_scorer'] or 'none (no CLIP model given)')}, cosine of the image with the prompt "
        f"where each person is “a person”. Intervals: 95%.</p>"
        f"<h2>Summary</h2>{summary_table(summary, meta['identities'])}"
        f"<h2>Identity vs prompt score</h2>{plot}"
        f"<h2>Variants</h2><ul>{variants}</ul>"
        f"<h2>Settings</h2><table>{rows}</table>"
        f"<h2>Images</h2>{grid_html(records, prompts, image_src)}"
    )


def report_html(meta: dict, summary: dict, records: Sequence[dict], prompts,
                image_src: Callable[[dict], str]) -> str:
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>CelebBasis evaluation</title>"
            f"<style>{STYLE}</style></head><body>{report_body(meta, summary, records, prompts, image_src)}"
            "</body></html>\n")
