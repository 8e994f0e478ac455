"""The tab's Evaluate section inside the A1111 1.10.1 stand-in: the Evaluate button's own queued function.

The stand-in has no sampler (its ``processing`` stops at the conditioning), so
the service's ``render`` is replaced by one that asks the host for each
prompt's conditioning (the host's prompt engine with the identity's file
loaded by the host's embedding database) and returns the training face,
shaded by that conditioning: the images differ by prompt, carry a face the
judge finds, and prove the token reached the host. What is tested is the
section: the host's queue, every image scored, the report written and shown,
bad choices as one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import ImageOps

from helpers import noise_photo
from host_helpers import fast_settings, needs_gradio, queued_function
from tiny_clip import write_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "host_standins" / "a1111"
if str(STANDIN) not in sys.path:
    sys.path.insert(0, str(STANDIN))
from standin import boot  # noqa: E402

ARGS = ["--no-half", "--use-cpu", "all", "--precision", "full", "--disable-nan-check", "--celebbasis-no-download"]


@needs_gradio
def test_evaluate_runs_in_the_host_queue_scores_every_image_and_shows_the_report(tmp_path, astronaut_path):
    import json

    import torch

    from celebbasis_ext.face.encoders import extract_face, load_face_encoder

    host = boot(tmp_path / "webui", args=ARGS, model="sd1", extensions=[ROOT])
    module = next(m for p, m in host.modules.scripts.loaded_modules.items() if Path(p).name == "celebbasis.py")
    service = module.service()
    fast_settings(service, tmp_path)
    [(blocks, _, _)] = host.modules.script_callbacks.ui_tabs_callback()
    train, evaluate = queued_function(blocks, "train"), queued_function(blocks, "evaluate")
    clip = write_tiny_clip(tmp_path / "clip")

    # an identity made in this session: the judge's reference of its photo is remembered
    *_, status = train("task(celebbasis-1)", [str(astronaut_path)], "zed_eval", "Fast", 2, 0.01, 23, "auto", "none",
                       "auto (largest face)", False)
    assert "Done" in status, status

    face = extract_face(str(astronaut_path), load_face_encoder("dlib")).head_crop.resize((256, 256))
    processing, queue_lock = host.modules.processing, host.modules.call_queue.queue_lock
    # "Original" emphasis rescales by the mean of the output, which the tiny text model sometimes has at exactly 0
    # (0/0: NaN everywhere); without emphasis in the prompts, "No norm" gives the same conditioning otherwise
    host.shared.opts.data["emphasis"] = "No norm"
    seen = []

    def render(path, name, templates, seed):
        assert queue_lock.locked()  # inside the host's queue
        images = []
        for template in templates:
            prompt = template.format(name)
            cond = processing.txt2img_conditioning([prompt])
            seen.append((prompt, seed, cond))
            shade = int(abs(float(cond.float().sum())) * 100) % 80
            images.append(ImageOps.expand(face, border=4 + 4 * seed, fill=(shade, shade, shade)))
        return images

    service.render = render
    report, status = evaluate(["zed_eval"], None, "single", str(clip))
    assert "12 images scored" in status and "Time taken" in status, status  # the host appended its timing
    assert len(seen) == 12 and {seed for _, seed, _ in seen} == {0, 1}
    assert len({prompt for prompt, _, _ in seen}) == 6 and all("zed_eval" in prompt for prompt, _, _ in seen)
    with_token = seen[0][2]
    without = processing.txt2img_conditioning([seen[0][0].replace("zed_eval", "a person")])
    assert not torch.allclose(with_token, without)  # the host's prompt engine read the identity's vectors

    [written] = list((tmp_path / "webui" / "outputs" / "celebbasis-eval").iterdir())
    document = json.loads((written / "scores.json").read_text())
    records = document["records"]
    assert len(records) == 12 and document["meta"]["judge"] == "dlib"
    assert all(r["faces"] == 1 and r["identity"]["zed_eval"] > 0.5 for r in records)  # the training face, found
    assert all(isinstance(r["prompt_score"], float) for r in records)
    assert (written / "report.html").is_file() and (written / "scores.csv").is_file()
    assert str(written / "report.html") in status
    assert report.count("data:image/jpeg;base64,") == 12 and "overall" in report and "id='scatter'" in report

    # bad choices: one line in the tab, nothing rendered
    seen.clear()
    _, status = evaluate([], None, "single", str(clip))
    assert "choose one or more identities" in status
    _, status = evaluate(["zed_eval"], None, "two-person", str(clip))
    assert "celebbasis eval" in status
    noise = tmp_path / "noise.png"
    noise_photo(size=96).save(noise)
    *_, done = train("task(celebbasis-2)", [str(noise)], "zed_noise", "Fast", 2, 0.01, 23, "auto", "none",
                     "auto (largest face)", False)
    assert "Done" in done, done
    _, status = evaluate(["zed_eval", "zed_noise"], None, "single", str(clip))
    assert "no reference for zed_noise" in status and "zed_noise.jpg" in status
    _, status = evaluate(["zed_eval"], None, "single", str(tmp_path / "no-clip-here" / "x"))
    assert "no CLIP model folder" in status and "Traceback" not in status
    assert seen == []
