"""``celebbasis eval``: end to end on a tiny SD1 with a tiny CLIP, resuming, bad input, and its parts.

The end-to-end run tunes two variants of two identities (``--tune --variant``),
renders every (variant, prompt, people, seed), scores each image with the dlib
judge and the tiny CLIP, and writes scores.json, scores.csv and report.html;
the numbers in the files are checked against a recomputation. The tiny
model's renders hold no faces, so their identity scores are "no face": that
likeness is measured right is shown on real faces (tests/test_browser.py for
the report, the planted-face test below for renders of known people).
"""

from __future__ import annotations

import csv
import json
import math
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image, ImageOps

from celebbasis_ext.cli import main
from celebbasis_ext.errors import BadInput, ModelFilesMissing
from conftest import tiny_pipeline
from helpers import small_names_file
from tiny_clip import write_tiny_clip

PROMPTS = "# a small set\na photo of {}\n{} as an oil painting\n\n{} and {} shaking hands\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory, astronaut_path):
    root = tmp_path_factory.mktemp("eval")
    tiny_pipeline("tiny-sd1").save_pretrained(root / "sd1")
    photos = root / "photos"
    photos.mkdir()
    face = Image.open(astronaut_path).convert("RGB")
    face.save(photos / "ann.jpg")
    ImageOps.mirror(face).save(photos / "bob.png")
    (root / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    return {"root": root, "model": root / "sd1", "photos": photos, "clip": write_tiny_clip(root / "clip"),
            "names": small_names_file(root), "prompts": root / "prompts.txt"}


def _run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _eval_args(world, out, *extra):
    return ["eval", "--model", world["model"], "--photos", world["photos"], "--prompts", world["prompts"],
            "--seeds", 2, "--steps", 2, "--judge", "dlib", "--clip", world["clip"], "--out", out, *extra]


TUNE = ("--tune", "--face-encoder", "none", "--names", "NAMES", "--set", "pool_size=2", "--set", "resolution=64",
        "--variant", "steps=2", "--variant", "steps=4,learning_rate=0.02")


def _tune_args(world):
    return [world["names"] if arg == "NAMES" else arg for arg in TUNE]


@pytest.fixture(scope="module")
def tuned_run(world, tmp_path_factory):
    """One --tune run with two variants (shared by the tests that read its files)."""
    out = tmp_path_factory.mktemp("report") / "report"
    code = main([str(a) for a in _eval_args(world, out, *_tune_args(world))])
    assert code == 0
    return out


def test_end_to_end_renders_scores_every_image_and_writes_three_files(world, tuned_run):
    out = tuned_run
    document = json.loads((out / "scores.json").read_text())
    records = document["records"]
    # 2 variants x (2 single prompts x 2 identities + 1 two-person prompt x 1 pair) x 2 seeds
    assert len(records) == 20
    assert {r["variant"] for r in records} == {"steps=2", "steps=4,learning_rate=0.02"}
    assert {tuple(r["people"]) for r in records} == {("ann",), ("bob",), ("ann", "bob")}
    for record in records:
        image = Image.open(out / record["image"])
        assert image.size == (64, 64)
        assert isinstance(record["faces"], int) and record["faces"] >= 0
        assert set(record["identity"]) == set(record["people"])
        assert isinstance(record["prompt_score"], float) and -1 <= record["prompt_score"] <= 1
        assert "{}" not in record["prompt"] and "a person" in record["clip_text"]
    # the same seed and prompt give the same picture across identities only through the token: they differ
    first = {(r["variant"], r["prompt_index"], tuple(r["people"]), r["seed"]): r for r in records}
    ann = np.asarray(Image.open(out / first[("steps=2", 0, ("ann",), 0)]["image"]), dtype=float)
    bob = np.asarray(Image.open(out / first[("steps=2", 0, ("bob",), 0)]["image"]), dtype=float)
    assert np.abs(ann - bob).mean() > 0

    # the prompt score is CLIP's cosine of the saved image and the prompt without the token
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(world["clip"]), CLIPProcessor.from_pretrained(world["clip"])
    record = records[5]
    inputs = processor(text=[record["clip_text"]], images=[Image.open(out / record["image"]).convert("RGB")],
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        image_features = model.visual_projection(model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output)
        text_features = model.text_projection(model.text_model(input_ids=inputs["input_ids"],
                                                               attention_mask=inputs["attention_mask"]).pooler_output)
    expected = float(torch.nn.functional.cosine_similarity(image_features, text_features)[0])
    assert record["prompt_score"] == pytest.approx(expected, abs=1e-3)

    # CSV: one row per person in each image
    with open(out / "scores.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == sum(len(r["people"]) for r in records) == 24
    assert {row["person"] for row in rows} == {"ann", "bob"}
    assert all(row["prompt_score"] for row in rows)

    # summary: per variant, identity and overall; the second variant against the first
    summary = document["summary"]
    assert summary["first_variant"] == "steps=2"
    second = summary["variants"][1]
    prompts = [r["prompt_score"] for r in records if r["variant"] == second["label"]
               for person in r["people"] if person == "ann"]
    assert second["identities"]["ann"]["prompt"]["mean"] == pytest.approx(sum(prompts) / len(prompts), abs=1e-4)
    assert second["identities"]["ann"]["images"] == len(prompts) == 6
    assert second["vs_first"]["prompt"]["mean"] is not None
    assert document["meta"]["judge"] == "dlib" and "no face model" in document["meta"]["judge_note"]
    assert [p["method"] for p in document["published"]] == ["Celeb Basis", "Textual Inversion", "DreamBooth",
                                                           "Cross-Initialization"]

    report = (out / "report.html").read_text()
    assert report.count("<section class='prompt'") == 3
    assert all(quote(r["image"]) in report for r in records)
    assert "overall" in report and "steps=4,learning_rate=0.02" in report
    # each variant's tuned files, with the variant's options
    for label, steps in (("steps=2", "2"), ("steps=4,learning_rate=0.02", "4")):
        from celebbasis_ext.evaluate.runner import Variant
        from celebbasis_ext.identity import load_identity

        folder = out / "embeddings" / Variant(label, {}).slug
        assert {p.name for p in folder.glob("*.safetensors")} == {"ann.safetensors", "bob.safetensors"}
        assert load_identity(folder / "ann.safetensors").metadata["steps"] == steps


def test_a_second_run_resumes_and_a_changed_run_is_refused(world, tuned_run, capsys):
    before = json.loads((tuned_run / "scores.json").read_text())["records"]
    mtimes = {r["image"]: (tuned_run / r["image"]).stat().st_mtime_ns for r in before}
    code, out, err = _run(capsys, *_eval_args(world, tuned_run, *_tune_args(world)))
    assert code == 0, err
    assert "20 images (0 rendered now)" in out
    assert all((tuned_run / image).stat().st_mtime_ns == mtime for image, mtime in mtimes.items())
    after = json.loads((tuned_run / "scores.json").read_text())["records"]
    assert [(r["key"], r["prompt_score"]) for r in after] == [(r["key"], r["prompt_score"]) for r in before]

    # one more seed: only the new images are rendered
    args = _eval_args(world, tuned_run, *_tune_args(world))
    args[args.index("--seeds") + 1] = 3
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert "30 images (10 rendered now)" in out

    # other sampling settings would mix two runs in one report: refused, nothing changed
    args[args.index("--steps") + 1] = 3
    code, out, err = _run(capsys, *args)
    [error] = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "other settings" in error and "steps" in error
    assert len(json.loads((tuned_run / "scores.json").read_text())["records"]) == 30


def test_given_embeddings_compared_as_two_variants(world, tuned_run, tmp_path, capsys):
    from celebbasis_ext.evaluate.runner import Variant

    first = tuned_run / "embeddings" / Variant("steps=2", {}).slug
    second = tuned_run / "embeddings" / Variant("steps=4,learning_rate=0.02", {}).slug
    (tmp_path / "prompts.txt").write_text("a photo of {}\n")
    out = tmp_path / "given"
    args = _eval_args(world, out, "--embeddings", first, "--embeddings", second / "ann.safetensors",
                      second / "bob.safetensors")
    args[args.index("--prompts") + 1] = tmp_path / "prompts.txt"
    code, stdout, err = _run(capsys, *args)
    assert code == 0, err
    records = json.loads((out / "scores.json").read_text())["records"]
    assert len(records) == 2 * 2 * 2 and len({r["variant"] for r in records}) == 2
    assert stdout.strip().splitlines()[-1] == str(out / "report.html")


@pytest.fixture(scope="module")
def other_family_embedding(tmp_path_factory, astronaut_path):
    """An SDXL embedding (clip_l/clip_g) named like an identity."""
    from celebbasis_ext.adapter import ModelFamily
    from celebbasis_ext.identity import Identity, save_identity

    folder = tmp_path_factory.mktemp("xl")
    import torch

    identity = Identity.from_embedding("ann", ModelFamily.SDXL, torch.randn(2, 80), (32, 48))
    save_identity(identity, folder)
    return folder


@pytest.mark.parametrize("case,words", [
    ("missing_photo", ["no photo for carl", "carl.jpg"]),
    ("other_family", ["another model family", "sdxl", "emb_params"]),
    ("empty_prompts", ["no prompts in"]),
    ("prompt_without_slot", ["line 2", "put {} where the person goes"]),
    ("unknown_option", ["unknown tuning option", "colour"]),
    ("bad_value", ["steps", "whole number"]),
    ("variant_without_tune", ["--variant", "--tune"]),
    ("missing_clip", ["no CLIP model folder"]),
    ("two_person_one_identity", ["two-person prompts need at least two identities"]),
    ("not_empty", ["not empty"]),
])
def test_bad_input_one_line_nothing_written(case, words, world, tuned_run, other_family_embedding, tmp_path, capsys):
    out = tmp_path / "out"
    args = _eval_args(world, out, "--embeddings", tuned_run / "embeddings" / __import__(
        "celebbasis_ext.evaluate.runner", fromlist=["Variant"]).Variant("steps=2", {}).slug)
    if case == "missing_photo":
        folder = tmp_path / "given"
        folder.mkdir()
        for name in ("ann", "bob", "carl"):
            (folder / f"{name}.safetensors").write_bytes(
                next((tuned_run / "embeddings").glob("*/ann.safetensors")).read_bytes())
        args[args.index("--embeddings") + 1] = folder
    elif case == "other_family":
        args[args.index("--embeddings") + 1] = other_family_embedding / "ann.safetensors"
    elif case == "empty_prompts":
        (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
        args[args.index("--prompts") + 1] = tmp_path / "empty.txt"
    elif case == "prompt_without_slot":
        (tmp_path / "bad.txt").write_text("a photo of {}\na photo of a cat\n")
        args[args.index("--prompts") + 1] = tmp_path / "bad.txt"
    elif case == "unknown_option":
        args = _eval_args(world, out, *_tune_args(world), "--variant", "colour=blue")
    elif case == "bad_value":
        args = _eval_args(world, out, *_tune_args(world), "--variant", "steps=many")
    elif case == "variant_without_tune":
        args += ["--variant", "preset=Fast"]
    elif case == "missing_clip":
        args[args.index("--clip") + 1] = tmp_path / "nowhere" / "clip"
    elif case == "two_person_one_identity":
        (tmp_path / "two.txt").write_text("{} and {} at a table\n")
        args[args.index("--prompts") + 1] = tmp_path / "two.txt"
        args[args.index("--embeddings") + 1] = next((tuned_run / "embeddings").glob("*/ann.safetensors"))
    elif case == "not_empty":
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    code, stdout, err = _run(capsys, *args)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert word.lower() in errors[0].lower(), err
    if case == "not_empty":
        assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    else:
        assert not out.exists()


# ---------------------------------------------------------------------------- parts
def test_shipped_prompt_sets():
    from celebbasis_ext.evaluate.prompts import SHIPPED, read_prompts

    for name in SHIPPED:
        prompts = read_prompts(name)
        assert len(prompts) >= 20, name
        assert len({p.template for p in prompts}) == len(prompts)
        assert {p.people for p in prompts} == ({2} if name == "two-person" else {1})
        assert all("{}" not in p.clip_text and "a person" in p.clip_text for p in prompts)
    prompt = read_prompts("two-person")[1]
    assert prompt.fill(["ann_v0", "bob_v0"]) == "ann_v0 and bob_v0 shaking hands"
    assert prompt.clip_text == "a person and a person shaking hands"


def test_spread_and_pairs():
    from celebbasis_ext.evaluate.prompts import pairs, read_prompts, spread

    prompts = read_prompts("single")
    chosen = spread(prompts, 6)
    assert len(chosen) == 6 and chosen[0] is prompts[0] and len({p.index for p in chosen}) == 6
    assert pairs(["a"]) == [] and pairs(["a", "b"]) == [("a", "b")]
    assert pairs(["a", "b", "c"]) == [("a", "b"), ("b", "c"), ("c", "a")]


def test_intervals_match_students_t():
    from scipy import stats

    from celebbasis_ext.evaluate.stats import mean_interval, t95

    for df in (1, 2, 5, 10, 29, 30):
        assert t95(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3)
    rng = np.random.default_rng(3)
    for n in (2, 7, 25):
        data = rng.normal(0.3, 0.1, n)
        low, high = stats.t.interval(0.95, n - 1, loc=data.mean(), scale=stats.sem(data))
        interval = mean_interval(list(data) + [None])
        assert interval.n == n and interval.mean == pytest.approx(data.mean())
        assert interval.low == pytest.approx(low, abs=1e-3) and interval.high == pytest.approx(high, abs=1e-3)
    assert mean_interval([None]).mean is None and mean_interval([0.5]).low is None


def test_variants_accept_any_tune_option_field(monkeypatch):
    """Any TuneOptions field is accepted by name and converted by type, also one the engine gains later."""
    import dataclasses

    from celebbasis_ext.evaluate import variants
    from celebbasis_ext.tuning import TuneOptions

    built = variants.build_variants(["preset=Fast", "steps=50,augment=false,resolution=none"], ["seed=5"])
    assert [v.label for v in built] == ["preset=Fast", "steps=50,augment=false,resolution=none"]
    assert built[0].options.steps == 200 and built[0].options.seed == 5
    assert built[1].options.steps == 50 and built[1].options.augment is False and built[1].options.resolution is None

    [views] = variants.build_variants(["views=photo,loss_mask=face"])  # issue 14's options, as the engine has them
    assert (views.options.views, views.options.loss_mask, views.label) == ("photo", "face", "views=photo,loss_mask=face")
    with pytest.raises(BadInput, match="sideways"):
        variants.build_variants(["views=sideways"])  # the engine's own check, one line

    @dataclasses.dataclass
    class Newer(TuneOptions):
        lora_rank: int = 0

    monkeypatch.setattr(variants, "TuneOptions", Newer)
    [variant] = variants.build_variants(["lora_rank=4"])
    assert variant.options.lora_rank == 4 and variant.describe()["lora_rank"] == 4
    with pytest.raises(BadInput, match="unknown tuning option 'view'"):
        variants.build_variants(["view=photo"])


def test_judge_is_another_face_model_when_one_is_available():
    from celebbasis_ext.evaluate.scoring import choose_judge

    both = {"insightface": "arcface", "dlib": "dlib-model"}
    assert choose_judge(["insightface"], load=both.__getitem__).name == "dlib"
    assert choose_judge(["dlib"], load=both.__getitem__).name == "insightface"
    assert choose_judge(["none"], load=both.__getitem__).name == "insightface"

    def only_insightface(kind):
        if kind == "dlib":
            raise ModelFilesMissing("dlib is not installed")
        return "arcface"

    judge = choose_judge(["insightface"], load=only_insightface)
    assert judge.name == "insightface" and not judge.independent and "may favour" in judge.describe()
    assert choose_judge(["insightface"], "insightface", load=both.__getitem__).name == "insightface"
    with pytest.raises(ModelFilesMissing, match="no face model to judge"):
        choose_judge([], load=lambda kind: (_ for _ in ()).throw(ModelFilesMissing(f"no {kind}")))
    with pytest.raises(BadInput, match="unknown judge"):
        choose_judge([], "clip")


def test_the_tabs_likeness_is_evals_identity_score(tmp_path, astronaut_path):
    """The service's preview likeness and the eval runner's identity score are one number for one image."""
    from celebbasis_ext.evaluate.prompts import Prompt
    from celebbasis_ext.evaluate.runner import EvalItem, EvalPlan, Variant, score_image
    from celebbasis_ext.evaluate.scoring import photo_reference
    from celebbasis_ext.face.encoders import extract_face, load_face_encoder
    from test_service import FAST, make_service

    dlib = load_face_encoder("dlib")
    crop = extract_face(str(astronaut_path), dlib).head_crop
    shifted = ImageOps.mirror(crop).rotate(8)

    def render(path, name, templates, seed):
        return [shifted][: len(templates)]

    service = make_service(tmp_path, face_encoder="none", render=render)
    service.tune([str(astronaut_path)], "zed_same", options={**FAST, "mode": "direct"})
    preview = service.preview("zed_same", count=1)
    assert preview["judge"] == "dlib"  # tuned without a face model: judged by one (insightface is absent here)

    reference, _ = photo_reference([str(astronaut_path)], dlib)
    plan = EvalPlan(out_dir=tmp_path, variants=[], references={"zed_same": reference}, prompts=[], seeds=[0],
                    judge=service.likeness_judge(service.out_dir / "zed_same.safetensors"), render=render)
    item = EvalItem(Variant("v", {"zed_same": "zed_same"}), Prompt("single", 0, "a photo of {}"), ("zed_same",), 0)
    scores = score_image(shifted, item, plan)
    assert preview["scores"][0] is not None and 0.5 < preview["scores"][0] < 1
    assert scores["identity"]["zed_same"] == preview["scores"][0] and scores["faces"] == 1


def test_report_without_faces_or_clip_says_why_there_is_no_plot():
    from celebbasis_ext.evaluate.report import scatter_png, summarize

    records = [{"variant": "v", "set": "single", "prompt_index": 0, "people": ["ann"], "seed": 0,
                "identity": {"ann": None}, "prompt_score": None}]
    png, why = scatter_png(summarize(records, ["v"], ["ann"]), "dlib")
    assert png is None and "needs identity and prompt scores" in why
    records[0]["identity"]["ann"], records[0]["prompt_score"] = 0.5, 0.2
    png, why = scatter_png(summarize(records, ["v"], ["ann"]), "dlib")
    assert png.startswith(b"\x89PNG") and why == ""
    assert math.isclose(summarize(records, ["v"], ["ann"])["variants"][0]["identity"].mean, 0.5)


def test_the_tabs_small_evaluation_through_the_standalone_renderer(tmp_path, astronaut_path):
    """The Evaluate section's engine on the standalone UI's service: the identity's vectors in each prompt's slot."""
    from celebbasis_ext.evaluate.service_run import evaluate_identities
    from celebbasis_ext.standalone_ui import create_service

    service = create_service(tiny_pipeline("tiny-sd1"), tmp_path / "embeddings", face_encoder="none",
                             names_file=str(small_names_file(tmp_path)), preview_steps=1,
                             basis_cache_dir=str(tmp_path / "basis"))
    service.tune([str(astronaut_path)], "zed_tab", options={"steps": 2, "pool_size": 2, "resolution": 64})
    outcome, plan = evaluate_identities(service, ["zed_tab"], [], "style", "none", prompts=3, seeds=2)
    assert plan.out_dir.parent == tmp_path / "celebbasis-eval"
    assert len(outcome.records) == 6 and [r["prompt_index"] for r in outcome.records[::2]] == [0, 8, 16]
    assert all((plan.out_dir / r["image"]).is_file() and r["prompt_score"] is None for r in outcome.records)
    assert (plan.out_dir / "report.html").is_file() and "no CLIP model given" in (plan.out_dir / "report.html").read_text()
    with pytest.raises(BadInput, match="use celebbasis eval"):
        evaluate_identities(service, ["zed_tab"], [], "two-person", "none")
    with pytest.raises(BadInput, match="no identity called 'nobody'"):
        evaluate_identities(service, ["nobody"], [], "single", "none")


def test_a_cancelled_run_keeps_what_it_scored_and_the_next_run_goes_on(tmp_path):
    from celebbasis_ext.errors import Cancelled
    from celebbasis_ext.evaluate.prompts import Prompt
    from celebbasis_ext.evaluate.runner import EvalPlan, Variant, run_eval
    from celebbasis_ext.evaluate.scoring import choose_judge

    rendered = []

    def render(item):
        rendered.append(item.key)
        return Image.new("RGB", (64, 64), (10 * item.seed, 80, 120))

    plan = EvalPlan(out_dir=tmp_path / "run", variants=[Variant("v", {"ann": "ann"})],
                    references={"ann": np.ones(128, dtype=np.float32) / math.sqrt(128)},
                    prompts=[Prompt("single", 0, "a photo of {}")], seeds=list(range(6)),
                    judge=choose_judge([], "dlib"), render=render)
    with pytest.raises(Cancelled, match="after 3 of 6"):
        run_eval(plan, should_cancel=lambda: len(rendered) >= 3)
    assert len((tmp_path / "run" / "progress.jsonl").read_text().splitlines()) == 3
    assert not (tmp_path / "run" / "scores.json").exists()  # the report is written when every image is scored
    updates = []
    outcome = run_eval(plan, progress=updates.append)
    assert outcome.rendered == 3 and len(outcome.records) == 6 and len(rendered) == 6
    assert [(u.done, u.total, u.rendered) for u in updates] == [(1, 6, 0), (2, 6, 0), (3, 6, 0), (4, 6, 1),
                                                                 (5, 6, 2), (6, 6, 3)]
    assert updates[0].eta_seconds is None and updates[3].eta_seconds > 0 and updates[-1].eta_seconds == 0
    assert [r["seed"] for r in outcome.records] == list(range(6))
    assert all(r["faces"] == 0 and r["identity"] == {"ann": None} for r in outcome.records)


def test_open_clip_models_are_called_as_open_clip_documents(monkeypatch):
    """``open_clip:ARCH:PRETRAINED`` goes to create_model_and_transforms / get_tokenizer (a module with that API:
    the real open_clip needs torchvision, which the test environment does not install)."""
    import sys
    import types

    import torch

    from celebbasis_ext.evaluate.clip_score import load_prompt_scorer

    calls = {}

    class Model(torch.nn.Module):
        def encode_image(self, pixels):
            return torch.tensor([[1.0, 0.0]])

        def encode_text(self, tokens):
            return torch.tensor([[1.0, 1.0]])

    def create_model_and_transforms(arch, pretrained=None):
        calls["model"] = (arch, pretrained)
        return Model(), None, lambda image: torch.zeros(3, 8, 8)

    def get_tokenizer(arch):
        calls["tokenizer"] = arch
        return lambda texts: torch.zeros(len(texts), 77, dtype=torch.long)

    fake = types.SimpleNamespace(create_model_and_transforms=create_model_and_transforms, get_tokenizer=get_tokenizer)
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    scorer = load_prompt_scorer("open_clip:ViT-B-32:laion2b_s34b_b79k")
    assert calls == {"model": ("ViT-B-32", "laion2b_s34b_b79k"), "tokenizer": "ViT-B-32"}
    assert scorer.score(Image.new("RGB", (8, 8)), "a person") == pytest.approx(1 / math.sqrt(2), abs=1e-4)
    load_prompt_scorer("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert calls["model"] == ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)
    assert load_prompt_scorer("none") is None
