"""CelebBasisService: what the tab, the API and the standalone UI share (on a tiny SD1 pipeline)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from celebbasis_ext.errors import BadInput, Cancelled
from celebbasis_ext.service import PRESETS, CelebBasisService, IdentityNotFound, ServiceSettings

from conftest import tiny_pipeline
from helpers import needs_dlib, noise_photo, small_names_file

FAST = {"steps": 2, "pool_size": 2, "report_every": 1}


def make_service(tmp_path, face_encoder="none", **kwargs):
    from celebbasis_ext.diffusers_adapter import DiffusersAdapter

    adapter = DiffusersAdapter(tiny_pipeline("tiny-sd1"), model_name="tiny-sd1")
    settings = ServiceSettings(face_encoder=face_encoder, names_file=str(small_names_file(tmp_path)),
                               basis_cache_dir=str(tmp_path / "basis"))
    return CelebBasisService(lambda: adapter, tmp_path / "embeddings" / "celebbasis", settings, **kwargs)


def test_presets_and_options(tmp_path):
    service = make_service(tmp_path)
    assert {name: options.steps for name, options in service.presets.items()} == {"Fast": 200, "Balanced": 400,
                                                                                  "Best": 800}
    assert list(PRESETS) == ["Fast", "Balanced", "Best"]
    options, kind = service.build_options("Fast", {"steps": 12.0, "seed": 5.0, "learning_rate": 0.02})
    assert (options.steps, options.seed, options.learning_rate, options.mode, kind) == (12, 5, 0.02, "direct", "none")
    options, kind = service.build_options(None, {"mode": "auto"}, face_encoder="dlib")
    assert (options.steps, options.mode, kind) == (400, "paper", "dlib")
    for preset, options, encoder, words in [
        ("Huge", None, None, "unknown preset 'Huge': choose one of Fast, Balanced, Best"),
        (None, {"stepz": 3}, None, "unknown option 'stepz': use steps, learning_rate"),
        (None, {"steps": 0}, None, "steps must be a whole number from 1 to 20000, not 0"),
        (None, {"steps": 2.5}, None, "not 2.5"),
        (None, {"learning_rate": float("nan")}, None, "learning rate must be a number in (0, 1], not nan"),
        (None, {"mode": "magic"}, None, "unknown mode 'magic': choose paper or direct"),
        (None, None, "face++", "unknown face encoder 'face++': choose one of auto"),
    ]:
        with pytest.raises(BadInput) as refused:
            service.build_options(preset, options, encoder)
        assert words in str(refused.value)


def test_tune_list_delete_and_reload_hook(tmp_path):
    saved, seen = [], []
    service = make_service(tmp_path, after_save=saved.append)
    result = service.tune([noise_photo(size=96)], "zed_cb", options=FAST, progress=seen.append)
    path = Path(result["file"])
    assert path.is_file() and path.parent == service.out_dir and path.name == "zed_cb.safetensors"
    assert result["token"] == "zed_cb" and result["family"] == "sd1" and result["face_encoder"] == "none"
    assert result["base_model"] == "tiny-sd1" and result["metadata"]["steps"] == "2"
    assert "coefficients" not in result["metadata"] and result["likeness"] is None
    assert [p.step for p in seen] == [1, 2] and saved == [path]
    assert service.progress()["busy"] is False and service.progress()["message"] == "saved"

    [row] = service.identities()
    assert row["name"] == "zed_cb" and row["base_model"] == "tiny-sd1" and row["family"] == "sd1"
    assert row["file"] == str(path) and row["likeness"] is None and row["date"]

    check = service.check_name("zed_cb")
    assert check.level == "error" and "exists" in check.message
    assert service.check_name("zed_cb", overwrite=True).level == "warning"
    assert service.check_name("ZED_CB").level == "error"  # differs only in case
    with pytest.raises(BadInput, match="zed_cb.safetensors already exists .* choose another name or allow overwriting"):
        service.tune([noise_photo()], "zed_cb", options=FAST)

    assert service.delete("zed_cb") == path and not path.exists() and saved == [path, path]
    assert service.identities() == []
    with pytest.raises(IdentityNotFound, match="no identity called 'zed_cb' in "):
        service.delete("zed_cb")
    for bad, words in (("../zed_cb", "must not contain path separators"), ("a/b", "'a/b' must not contain"),
                       ("..", "'..' must not contain"), ("", "the name is empty"), ("C:evil", "drive letters")):
        with pytest.raises(BadInput) as refused:
            service.delete(bad)
        assert words in str(refused.value)


def test_delete_refuses_a_link_out_of_the_folder(tmp_path):
    service = make_service(tmp_path)
    outside = tmp_path / "precious.safetensors"
    outside.write_bytes(b"keep me")
    service.out_dir.mkdir(parents=True)
    (service.out_dir / "trap.safetensors").symlink_to(outside)
    with pytest.raises(BadInput, match="the name 'trap' would write outside"):
        service.delete("trap")
    assert outside.read_bytes() == b"keep me"


def test_bad_requests_fail_before_the_model_is_touched(tmp_path):
    def no_model():
        raise AssertionError("the model must not be asked for")

    service = CelebBasisService(no_model, tmp_path / "out", ServiceSettings(face_encoder="none"))
    for photos, name, options, words in [
        ([], "zed", FAST, "no photo given"),
        ([noise_photo()], "", FAST, "the name is empty"),
        ([noise_photo()], "a/b", FAST, "'a/b' must not contain path separators"),
        ([noise_photo()], "zed", {"steps": -1}, "steps must be a whole number from 1 to 20000, not -1"),
        ([noise_photo()] * 17, "zed", FAST, "17 photos given; use at most 16"),
    ]:
        with pytest.raises(BadInput) as refused:
            service.tune(photos, name, options=options)
        assert words in str(refused.value)
    with pytest.raises(BadInput, match="face encoder 'none' works only with mode 'direct'"):
        service.tune([noise_photo()], "zed", options={**FAST, "mode": "paper"})
    assert not (tmp_path / "out").exists()

    service = CelebBasisService(lambda: None, tmp_path / "out", ServiceSettings(face_encoder="none"))
    with pytest.raises(BadInput, match="no model is loaded: choose a Stable Diffusion checkpoint first"):
        service.tune([noise_photo()], "zed", options=FAST)


def test_check_name_messages(tmp_path):
    service = make_service(tmp_path, known_embeddings=lambda: ["Loaded_Elsewhere"],
                           vocabulary=lambda word: word.lower() in {"cat", "anna"})
    assert service.check_name("").level == "empty"
    assert service.check_name("   ").level == "empty"
    for bad in ("a b", "x/y", "..", "ä", "-x", "a" * 65, "con"):
        check = service.check_name(bad)
        assert check.level == "error" and not check.ok and check.message, bad
    assert service.check_name("loaded_elsewhere").level == "error"
    assert service.check_name("Cat").level == "warning" and service.check_name("Cat").ok
    check = service.check_name("zed_cb")
    assert check.level == "ok" and "zed_cb" in str(check)


def test_cancel_writes_nothing(tmp_path):
    service = make_service(tmp_path)

    def cancel_at_first_report(progress):
        service.cancel()

    with pytest.raises(Cancelled):
        service.tune([noise_photo()], "zed_cancel", options={**FAST, "steps": 50},
                     progress=cancel_at_first_report)
    assert not list(service.out_dir.glob("*")) if service.out_dir.exists() else True
    assert service.progress()["message"] == "cancelled" and not service.busy
    # the next run is not cancelled by the earlier request
    assert Path(service.tune([noise_photo()], "zed_after", options=FAST)["file"]).is_file()


def test_two_tunes_never_interleave(tmp_path, monkeypatch):
    import celebbasis_ext.pipeline as pipeline

    events, real = [], pipeline.tune_identity

    def recording(adapter, request, progress=None, should_cancel=None, encoder=None):
        events.append(("start", request.name))
        time.sleep(0.3)
        events.append(("end", request.name))
        return real(adapter, request, progress, should_cancel, encoder)

    monkeypatch.setattr(pipeline, "tune_identity", recording)
    service = make_service(tmp_path)
    errors = []

    def run(name):
        try:
            service.tune([noise_photo()], name, options=FAST)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("zed_one", "zed_two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [kind for kind, _ in events] == ["start", "end", "start", "end"]
    assert events[0][1] == events[1][1] and events[2][1] == events[3][1]
    assert {row["name"] for row in service.identities()} == {"zed_one", "zed_two"}


@needs_dlib
def test_dlib_detect_tune_and_likeness_wiring(tmp_path, astronaut_path):
    """Detection, and the likeness wiring (a score per render, None without a face, recorded for the table),
    with renders handed over by hand; that the score tells people apart is shown on real renders of
    planted faces in test_likeness.py."""
    from PIL import Image

    from celebbasis_ext.face.encoders import extract_face, load_face_encoder

    crop = extract_face(str(astronaut_path), load_face_encoder("dlib")).head_crop

    def render(path, name, templates, seed):  # one call per image, image i with seed i
        assert Path(path).is_file() and name == "zed_astro" and len(templates) == 1
        return [[crop, Image.new("RGB", (128, 128), "gray")][seed % 2]]

    service = make_service(tmp_path, face_encoder="dlib", render=render)
    [face] = service.detect(str(astronaut_path))
    assert face.index == 0 and face.score > 0 and face.thumbnail.size == (128, 128)
    x0, y0, x1, y1 = face.box
    assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200  # the astronaut's face, top middle

    result = service.tune([str(astronaut_path)], "zed_astro", options=FAST, likeness=True)
    assert result["face_encoder"] == "dlib" and result["metadata"]["mode"] == "paper"
    assert result["scores"][0] > 0.9 and result["scores"][1] is None  # the same face; no face in gray
    assert result["likeness"] == result["scores"][0]
    [row] = service.identities()
    assert row["likeness"] == result["likeness"]

    preview = service.preview("zed_astro", count=2)
    assert len(preview["images"]) == 2 and preview["prompts"][0] == "a photo of zed_astro"
    with pytest.raises(IdentityNotFound, match="no identity called 'nobody'"):
        service.preview("nobody")
    with pytest.raises(BadInput, match=r"face encoder 'none' finds no faces: the whole photo is used \(mode 'direct'\)"):
        service.detect(noise_photo(), face_encoder="none")

    # After a restart the reference comes from the photo again: with several faces, the user's choice counts.
    import insightface

    group = str(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")
    service._references.clear()
    ambiguous = service.preview("zed_astro", photos=[group], count=1)
    assert ambiguous["likeness"] is None and "face index" in ambiguous["note"]
    chosen = service.preview("zed_astro", photos=[group], count=1, face_index=0)
    assert chosen["scores"][0] is not None
