"""A real browser drives the standalone UI: upload a photo, press Train, see the token and the file, render it.

Headless Debian Chromium (/usr/bin/chromium) through Python Playwright; no
browser is ever downloaded. Skipped, with the reason, when chromium,
Playwright or gradio is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

import pytest

from conftest import tiny_pipeline
from helpers import needs_dlib, noise_photo, small_names_file

CHROMIUM = os.environ.get("CELEBBASIS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed (pip install playwright)")
try:
    from celebbasis_ext.webui.compat import import_gradio

    import_gradio()
except Exception as error:  # noqa: BLE001
    pytest.skip(f"gradio is not usable here ({type(error).__name__}: {error})", allow_module_level=True)


@contextlib.contextmanager
def chromium():
    """Headless Chromium for one test, closed after it even when the test fails."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def page_errors(page) -> list:
    """The page's uncaught script errors, collected from now on."""
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from celebbasis_ext.standalone_ui import serve

    tmp = tmp_path_factory.mktemp("ui")
    running = serve(pipe=tiny_pipeline("tiny-sd1"), port=free_port(), out_dir=tmp / "embeddings",
                    face_encoder="none", names_file=str(small_names_file(tmp)), preview_steps=1, block=False,
                    basis_cache_dir=str(tmp / "basis"))
    running.service.settings.tune_defaults = {"pool_size": 2}
    yield running
    running.close()


def test_upload_train_see_token_and_file(server, tmp_path):
    assert server.url.startswith("http://127.0.0.1:")
    photo = tmp_path / "photo.png"
    noise_photo(size=96).save(photo)
    with chromium() as browser:
        page = browser.new_page()
        errors = page_errors(page)
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_selector("#celebbasis_train", timeout=60_000)

        page.set_input_files("#celebbasis_photos input[type=file]", str(photo))
        name = page.locator("#celebbasis_name textarea, #celebbasis_name input").first
        name.fill("a/b")
        page.wait_for_function(
            "() => document.querySelector('#celebbasis_name_hint').innerText.includes('separator')",
            timeout=30_000)
        assert name.get_attribute("aria-invalid") == "true"  # the script's instant hint
        name.fill("zed_browser")
        page.wait_for_function(
            "() => document.querySelector('#celebbasis_name_hint').innerText.includes('is free')",
            timeout=30_000)
        assert name.get_attribute("aria-invalid") is None
        page.wait_for_function(
            "() => document.querySelector('#celebbasis_face_note').innerText.includes('centre')",
            timeout=30_000)

        page.click("#celebbasis_advanced")
        steps = page.locator("#celebbasis_steps input[type=number]")
        steps.fill("2")
        steps.press("Enter")
        page.click("#celebbasis_train")
        page.wait_for_function(
            "() => { const e = document.querySelector('#celebbasis_file textarea, #celebbasis_file input');"
            " return e && e.value.endsWith('.safetensors'); }", timeout=120_000)
        token = page.input_value("#celebbasis_token textarea, #celebbasis_token input")
        file = page.input_value("#celebbasis_file textarea, #celebbasis_file input")
        assert token == "zed_browser"
        assert Path(file) == server.service.out_dir / "zed_browser.safetensors" and Path(file).is_file()
        assert "zed_browser" in page.inner_text("#celebbasis_status")
        page.wait_for_function(
            "() => document.querySelector('#celebbasis_identities').innerText.includes('zed_browser')",
            timeout=30_000)
        assert page.evaluate("typeof window.celebbasis_train") == "function"  # the script was injected
        assert "#celebbasis_train" in page.evaluate(
            "Array.from(document.querySelectorAll('style')).map(s => s.textContent).join(' ')")  # our CSS too
        # No txt2img here: "Use in prompt" fills the page's own prompt box, Render draws with the token.
        assert page.inner_text("#celebbasis_send").strip() == "Use in prompt"
        page.click("#celebbasis_send")
        page.wait_for_function(
            "() => document.querySelector('#celebbasis_render_prompt textarea').value === 'a photo of zed_browser'",
            timeout=30_000)
        page.click("#celebbasis_render_button")
        page.wait_for_function(
            "() => document.querySelector('#celebbasis_render_note').innerText.includes('Rendered with zed_browser')",
            timeout=120_000)
        assert page.locator("#celebbasis_render_image img").count() == 1
        # A page opened afterwards lists it too (the table is filled at page load, not at UI build).
        fresh = browser.new_page()
        fresh.goto(server.url, wait_until="domcontentloaded")
        fresh.wait_for_function(
            "() => { const t = document.querySelector('#celebbasis_identities');"
            " return t && t.innerText.includes('zed_browser'); }", timeout=60_000)
        # ... and a click on its row fills Token and File, empty after the reload
        assert fresh.input_value("#celebbasis_token textarea, #celebbasis_token input") == ""
        fresh.locator("#celebbasis_identities").scroll_into_view_if_needed()  # its rows render when seen
        fresh.locator("#celebbasis_identities td").filter(has_text="zed_browser").last.click()
        fresh.wait_for_function(
            "() => { const e = document.querySelector('#celebbasis_file textarea, #celebbasis_file input');"
            " return e && e.value.endsWith('zed_browser.safetensors'); }", timeout=30_000)
        assert fresh.input_value("#celebbasis_token textarea, #celebbasis_token input") == "zed_browser"
        # on this CPU the note next to Train says so, with the time measured on the run above
        note = fresh.inner_text("#celebbasis_train_note")
        assert "runs on the CPU" in note and "Expected time" in note, note
        assert not errors, errors


# The host's requestProgress, as each host's page defines it (only what our script relies on).
A1111_REQUEST_PROGRESS = """(id, box, gallery, atEnd, onProgress) => {  // its bar goes before the element
    const bar = document.createElement('div'); bar.className = 'progressDiv'; bar.textContent = 'host bar';
    box.parentNode.insertBefore(bar, box); window.__runs.push({atEnd, onProgress}); }"""
SDNEXT_REQUEST_PROGRESS = """(id, box, gallery, atEnd, onProgress) => {  // draws nothing into the element
    window.__runs.push({atEnd, onProgress}); }"""


@pytest.mark.parametrize("host, request_progress, line_expected", [
    ("SD.Next", SDNEXT_REQUEST_PROGRESS, True), ("A1111", A1111_REQUEST_PROGRESS, False)])
def test_progress_under_train_with_the_hosts_progress_requests(server, host, request_progress, line_expected):
    """Found in the real SD.Next: its requestProgress only marks the Generate buttons, so the tab showed no
    progress; the host's answers become our line there, and A1111's own bar is not doubled."""
    with chromium() as browser:
        page = browser.new_page()
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_selector("#celebbasis_train", timeout=60_000)
        page.evaluate(f"() => {{ window.__runs = []; window.requestProgress = {request_progress}; }}")
        args = page.evaluate("() => window.celebbasis_train('', 'photo')")
        assert args[0].startswith("task(") and args[1] == "photo"
        line = page.locator(".celebbasis-progress-line")
        page.evaluate("() => window.__runs[0].onProgress({textinfo: 'Waiting...', active: false, eta: 4842})")
        if line_expected:  # queued: SD.Next's eta is still the previous job's
            assert line.inner_text() == "Waiting..."
        page.evaluate("() => window.__runs[0].onProgress("
                      "{textinfo: 'CelebBasis: step 5/300, loss 0.1234', active: true, progress: 0.02, eta: 75})")
        if line_expected:
            assert line.inner_text() == "CelebBasis: step 5/300, loss 0.1234 · about 1:15 left"
            page.evaluate("() => window.__runs[0].atEnd()")
            assert line.inner_text() == ""
        else:
            assert line.count() == 0 and page.locator(".progressDiv").count() == 1


@needs_dlib
def test_face_captions_are_whole(server, astronaut_path):
    """The gallery caption names the face for a person ("face 1 (largest)") and is not cut off."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_selector("#celebbasis_train", timeout=60_000)
        page.click("#celebbasis_advanced")
        page.click("#celebbasis_face_encoder input")
        page.get_by_role("option", name="dlib", exact=True).click()
        page.set_input_files("#celebbasis_photos input[type=file]", str(astronaut_path))
        page.wait_for_function(
            "() => [...document.querySelectorAll('#celebbasis_faces .caption-label')]"
            ".some(e => e.innerText.trim() === 'face 1 (largest)')", timeout=60_000)
        caption = page.locator("#celebbasis_faces .caption-label").first
        box = caption.evaluate("e => [e.scrollWidth, e.clientWidth, e.getBoundingClientRect().right,"
                               " e.parentElement.getBoundingClientRect().right]")
        assert box[0] <= box[1] + 1 and box[2] <= box[3] + 1, box  # no ellipsis, inside its thumbnail


@needs_dlib
def test_eval_report_shows_the_grid_and_the_plot(tmp_path, astronaut_path):
    """report.html of a small evaluation opens in the browser: the summary, the plot and every image with its scores.

    The "renders" here are the reference face itself (mirrored for odd seeds, a second person as a rotated copy),
    so that faces are found and the plot has points; the scores themselves are measured as in any run.
    """
    from PIL import ImageOps

    from celebbasis_ext.evaluate.clip_score import load_prompt_scorer
    from celebbasis_ext.evaluate.prompts import Prompt
    from celebbasis_ext.evaluate.runner import EvalPlan, Variant, run_eval
    from celebbasis_ext.evaluate.scoring import choose_judge, photo_reference
    from celebbasis_ext.face.encoders import extract_face
    from tiny_clip import write_tiny_clip

    judge = choose_judge(["none"], "dlib")
    face = extract_face(str(astronaut_path), judge.encoder).head_crop.resize((192, 192))
    reference, _ = photo_reference([str(astronaut_path)], judge.encoder)
    faces = {"ann": face, "bob": face.rotate(10)}

    def render(item):
        picture = faces[item.people[0]]
        return ImageOps.mirror(picture) if item.seed % 2 else picture

    prompts = [Prompt("single", 0, "{} in a park"), Prompt("single", 1, "a painting of {}")]
    variants = [Variant(label, {"ann": "ann", "bob": "bob"}, {}, {}) for label in ("preset=Fast", "preset=Best")]
    plan = EvalPlan(out_dir=tmp_path / "report", variants=variants, references={"ann": reference, "bob": reference},
                    prompts=prompts, seeds=[0, 1], judge=judge, render=render,
                    prompt_scorer=load_prompt_scorer(str(write_tiny_clip(tmp_path / "clip"))))
    outcome = run_eval(plan)
    assert len(outcome.records) == 16 and all(r["faces"] == 1 for r in outcome.records)

    with chromium() as browser:
        page = browser.new_page()
        errors = page_errors(page)
        page.goto(outcome.files["html"].as_uri(), wait_until="load")
        assert "overall" in page.inner_text("#summary") and "preset=Best" in page.inner_text("#summary")
        plot = page.locator("#scatter img")
        plot.scroll_into_view_if_needed()
        page.wait_for_function("() => document.querySelector('#scatter img').naturalWidth > 300", timeout=30_000)
        assert page.locator("section.prompt").count() == 2
        images = page.locator("section.prompt img")
        assert images.count() == 16
        for index in range(16):
            images.nth(index).scroll_into_view_if_needed()
        page.wait_for_function(
            "() => [...document.querySelectorAll('section.prompt img')].every(i => i.complete && i.naturalWidth)",
            timeout=30_000)
        captions = page.locator("section.prompt figcaption").all_inner_texts()
        assert len(captions) == 16 and all(c.startswith("id 0.") and " · text " in c for c in captions)
        assert not errors, errors
