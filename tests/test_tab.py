"""The tab's own behaviour, through its gradio Blocks and callbacks, over the standalone service (tiny SD1).

What the real A1111 check found: after a page reload the identities table (or the Identity list) must fill
Token and File; the Likeness column must show the last preview's score; face captions are "face 1 (largest)"
without detector scores; on the CPU the tab says so before training, with an expected time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_pipeline
from helpers import needs_dlib, noise_photo, small_names_file
from host_helpers import needs_gradio

pytestmark = needs_gradio


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    from celebbasis_ext.standalone_ui import create_service
    from celebbasis_ext.webui.tab import build_tab

    tmp = tmp_path_factory.mktemp("tab")
    service = create_service(tiny_pipeline("tiny-sd1"), tmp / "embeddings", face_encoder="none",
                             names_file=str(small_names_file(tmp)), preview_steps=1,
                             basis_cache_dir=str(tmp / "basis"))
    service.settings.tune_defaults = {"pool_size": 2, "resolution": 64, "report_every": 1}
    service.settings.preview_count = 2
    blocks = build_tab(service)
    return service, blocks, blocks.celebbasis_callbacks


def component(blocks, elem_id):
    [found] = [block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == elem_id]
    return found


def event(blocks, target, name):
    """The function gradio runs for ``name`` on ``target`` (a component or the Blocks itself)."""
    functions = blocks.fns.values() if isinstance(blocks.fns, dict) else blocks.fns
    found = [fn for fn in functions if (target._id, name) in [tuple(t) for t in fn.targets]]
    assert found, f"no {name} event on {target}"
    return found[0]


def train(callbacks, photo, name, steps=2, face_encoder="none", face_choice="auto (largest face)", overwrite=False):
    return callbacks.train("task(t)", [str(photo)], name, "Fast", steps, 0.01, 1, "auto", face_encoder,
                           face_choice, overwrite)


def test_the_identities_table_and_list_fill_token_and_file(tab, tmp_path):
    service, blocks, callbacks = tab
    photo = tmp_path / "photo.png"
    noise_photo(size=96).save(photo)
    token, file, *_, status = train(callbacks, photo, "zed_pick")
    assert token == "zed_pick", status

    # the events the page uses: a click in the table, a choice in the Identity list, and every page load
    table, chosen = component(blocks, "celebbasis_identities"), component(blocks, "celebbasis_identity")
    token_box, file_box = component(blocks, "celebbasis_token"), component(blocks, "celebbasis_file")
    on_row = event(blocks, table, "select")
    assert on_row.inputs == [table] and on_row.outputs == [chosen, token_box, file_box]
    on_choice = event(blocks, chosen, "input")
    assert on_choice.fn == callbacks.choose_identity and on_choice.outputs == [token_box, file_box]
    on_load = event(blocks, blocks, "load")
    assert on_load.fn == callbacks.page_load and on_load.outputs == [chosen, component(blocks, "celebbasis_train_note")]

    class Click:  # gradio's SelectData: index = [row, column]
        index = [0, 2]

    rows = table.preprocess(table.postprocess(callbacks.refresh()[0]["value"]))  # as the page hands them back
    choice, token_value, file_value = on_row.fn(rows, Click())
    assert (choice["value"], token_value, file_value) == ("zed_pick", "zed_pick", file)
    assert "zed_pick" in choice["choices"]
    assert on_choice.fn("zed_pick") == ("zed_pick", file)
    assert "zed_pick" in on_load.fn(2)[0]["choices"]  # a page opened later lists it in the Identity list too
    blank = callbacks.select_row([["", "", "", "", "", "", ""]], [0, 0])  # the empty table's placeholder row
    assert all(update == {"__type__": "update"} for update in blank)


def test_cpu_warning_and_expected_time_next_to_train(tab, tmp_path):
    service, blocks, callbacks = tab
    assert service.tuning_device() == "cpu"
    note = component(blocks, "celebbasis_train_note")
    steps = component(blocks, "celebbasis_steps")
    assert event(blocks, steps, "change").outputs == [note]
    photo = tmp_path / "photo.png"
    noise_photo(size=96).save(photo)
    *_, train_note, status = train(callbacks, photo, "zed_clock", steps=3)
    assert "Done" in status
    estimate = service.expected_time(400)  # measured on that run, kept beside the files (not in them)
    assert estimate["name"] == "zed_clock" and estimate["step_seconds"] > 0 and estimate["setup_seconds"] > 0
    assert estimate["seconds"] == pytest.approx(estimate["setup_seconds"] + 400 * estimate["step_seconds"])
    assert "runs on the CPU" in train_note and "Expected time for 3 steps" in train_note
    assert "Expected time for 400 steps" in callbacks.train_note(400)


def likeness_cell(table, name):
    from celebbasis_ext.webui.tab import IDENTITY_HEADERS

    return next(row[IDENTITY_HEADERS.index("Likeness")] for row in table["value"] if row[0] == name)


@needs_dlib
def test_likeness_column_says_when_the_previews_hold_no_face(tab, tmp_path, monkeypatch, astronaut_path):
    service, blocks, callbacks = tab
    monkeypatch.setattr(service.settings, "face_encoder", "dlib")  # compares with the uploaded photo's face
    photo = tmp_path / "photo.png"
    noise_photo(size=96).save(photo)
    train(callbacks, photo, "zed_blank")
    assert likeness_cell(callbacks.refresh()[0], "zed_blank") == ""  # not measured yet
    preview = event(blocks, component(blocks, "celebbasis_preview_button"), "click")
    assert preview.outputs[1] is component(blocks, "celebbasis_identities")  # Preview refreshes the table
    # the tiny model's real renders hold no face: measured all the same, and the column says so
    gallery, table, note = callbacks.preview("task(p)", "zed_blank", [str(astronaut_path)], "auto (largest face)")
    assert len(gallery) == 2 and "no face found in the previews" in note
    assert likeness_cell(table, "zed_blank") == "no face"
    [row] = [row for row in service.identities() if row["name"] == "zed_blank"]
    assert row["likeness"] is None and row["likeness_note"] == "no face found in the previews"


@needs_dlib
def test_likeness_column_shows_the_last_previews_score(tab, tmp_path, monkeypatch, astronaut_path):
    from PIL import Image

    service, blocks, callbacks = tab
    monkeypatch.setattr(service.settings, "face_encoder", "dlib")
    train(callbacks, astronaut_path, "zed_like", face_encoder="dlib")
    # Renders that show the training photo itself (the tiny model draws no faces): this checks the column's
    # plumbing; the score on real renders is the planted-identity tests' job.
    photo = Image.open(astronaut_path)
    monkeypatch.setattr(service, "render", lambda path, name, templates, seed: [photo])
    gallery, table, note = callbacks.preview("task(p)", "zed_like", [str(astronaut_path)], "auto (largest face)")
    [row] = [row for row in service.identities() if row["name"] == "zed_like"]
    assert row["likeness"] > 0.9 and f"Likeness {row['likeness']:.3f}" in note
    assert likeness_cell(table, "zed_like") == f"{row['likeness']:.3f}"
    assert likeness_cell(callbacks.refresh()[0], "zed_like") == f"{row['likeness']:.3f}"  # and after a reload
    # a retrained file does not keep the old file's score
    train(callbacks, astronaut_path, "zed_like", face_encoder="dlib", overwrite=True)
    assert likeness_cell(callbacks.refresh()[0], "zed_like") == ""


@needs_dlib
def test_face_captions_count_from_one_without_scores(tab, tmp_path, monkeypatch, astronaut_path):
    import insightface

    service, blocks, callbacks = tab
    group = str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")
    gallery, choice, note, face_map = callbacks.detect([str(astronaut_path)], "dlib")
    assert [caption for _, caption in gallery] == ["face 1 (largest)"] and face_map == [0]
    assert choice["choices"] == ["auto (largest face)", "face 1 (largest)"] and "One face" in note

    gallery, choice, note, face_map = callbacks.detect([str(astronaut_path), group], "dlib")
    captions = [caption for _, caption in gallery]
    assert captions[:3] == ["photo 1, face 1 (largest)", "photo 2, face 1 (largest)", "photo 2, face 2"]
    assert not any("score" in caption for caption in captions)
    assert choice["choices"][1:] == [f"face {i + 1}" + (" (largest)" if i == 0 else "") for i in range(max(face_map) + 1)]
    assert "face 1 is the largest" in note
    assert callbacks.select_face(face_map, 2)["value"] == "face 2"

    # the chosen label reaches the service as its 0-based index: with "face 2" the group photo is not ambiguous
    photo = tmp_path / "photo.png"
    noise_photo(size=96).save(photo)
    train(callbacks, photo, "zed_group")
    monkeypatch.setattr(service.settings, "face_encoder", "dlib")
    *_, ambiguous = callbacks.preview("task(p)", "zed_group", [group], "auto (largest face)")
    *_, chosen = callbacks.preview("task(p)", "zed_group", [group], "face 2")
    assert "face index" in ambiguous and "face index" not in chosen and "no face found in the previews" in chosen
