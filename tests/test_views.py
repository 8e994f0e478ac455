"""Training views (paper | photo | mixed) and the face-weighted loss: shapes, framing, weights, plumbing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from celebbasis_ext import augment
from celebbasis_ext.augment import (FACE_BOX_IN_HEAD, MASK_OUTSIDE, FacePhoto, augmented_views, colour_jitter,
                                    face_weights, paste_on_canvas)
from celebbasis_ext.errors import BadInput
from celebbasis_ext.tuning import TuneOptions, diffusion_loss

from conftest import tiny_pipeline
from helpers import small_names_file

FACE = (0.35, 0.3, 0.65, 0.7)


def marked(height: int, width: int, box) -> torch.Tensor:
    """A mid-grey picture with the face box painted white: views must carry the white where they say the face is."""
    image = torch.full((3, height, width), 0.5)
    x0, y0, x1, y1 = box
    image[:, int(round(y0 * height)): int(round(y1 * height)), int(round(x0 * width)): int(round(x1 * width))] = 1.0
    return image


def inner(box, size, margin=2):
    """Pixel slices well inside a box given as fractions of a size x size canvas."""
    x0, y0, x1, y1 = (int(round(v * size)) for v in box)
    return slice(y0 + margin, y1 - margin), slice(x0 + margin, x1 - margin)


def test_paper_views_are_the_authors_views_seed_for_seed():
    """paper mode: flip, colour jitter, the face pasted at 10-100% on black, in the same random order as before."""
    faces = [torch.rand(3, 90, 80, generator=torch.Generator().manual_seed(1)), torch.rand(3, 70, 70)]
    views = augmented_views(faces, 9, 64, seed=5, views="paper")
    rng = np.random.default_rng(5)
    for index, view in enumerate(views):
        face = faces[index % 2]
        flipped = bool(rng.random() < 0.5)
        expected = paste_on_canvas(colour_jitter(face.flip(-1) if flipped else face, rng), 64, rng) * 2 - 1
        assert view.flipped == flipped and view.photo_index == index % 2
        assert torch.equal(view.canvas, expected)
    assert any((view.canvas == -1).all(dim=0).float().mean() > 0.3 for view in views)  # black canvas


@pytest.mark.parametrize("mode", ["paper", "photo"])
def test_the_view_knows_where_the_face_is(mode):
    head = marked(120, 120, FACE_BOX_IN_HEAD)
    photo = FacePhoto(head, FACE_BOX_IN_HEAD, marked(240, 200, FACE), FACE)
    views = augmented_views([photo], 24, 96, seed=3, views=mode)
    for view in views:
        rows, cols = inner(view.face_box, 96)
        face = (view.canvas[:, rows, cols] + 1) / 2
        if face.numel():
            assert face.min() > 0.75, (view.face_box, view.flipped)  # white (jittered) inside the box
        assert 0 <= view.face_box[0] < view.face_box[2] <= 1 and 0 <= view.face_box[1] < view.face_box[3] <= 1


def test_photo_views_crop_the_framing_and_keep_the_whole_face():
    framing = marked(300, 300, FACE)
    views = augmented_views([FacePhoto(marked(100, 100, FACE_BOX_IN_HEAD), framing=framing, framing_face=FACE)],
                            40, 64, seed=0, views="photo")
    widths = []
    for view in views:
        assert view.canvas.shape == (3, 64, 64) and view.canvas.min() >= -1 and view.canvas.max() <= 1
        assert (view.canvas == -1).all(dim=0).float().mean() == 0  # no black canvas anywhere
        x0, y0, x1, y1 = view.face_box
        assert 0 <= x0 and x1 <= 1 and 0 <= y0 and y1 <= 1  # the face is never cut
        widths.append(x1 - x0)
    # scale 0.3-1.0 of the framing's area: the face spans its own width to ~1/sqrt(0.3) of it
    face_width = FACE[2] - FACE[0]
    assert min(widths) >= 0.85 * face_width and max(widths) <= 1.15 * face_width / np.sqrt(0.3)
    assert max(widths) > 1.3 * min(widths)  # the scale really varies
    assert len({view.flipped for view in views}) == 2


def test_mixed_views_hold_both_kinds():
    photo = FacePhoto(torch.full((3, 80, 80), 0.6), FACE_BOX_IN_HEAD, torch.full((3, 160, 160), 0.6), FACE)
    views = augmented_views([photo], 60, 64, seed=1, views="mixed")
    black = [(view.canvas == -1).all(dim=0).float().mean().item() for view in views]
    pasted = sum(share > 0 for share in black)
    assert 0.3 * len(views) < pasted < 0.7 * len(views)  # about MIXED_PAPER_SHARE pasted on black


def test_without_augmentation_the_head_crop_is_the_only_view_whatever_the_mode():
    head = torch.rand(3, 64, 64)
    for mode in augment.VIEW_MODES:
        views = augmented_views([FacePhoto(head, framing=torch.rand(3, 128, 128), framing_face=FACE)], 10, 64,
                                seed=0, augment=False, views=mode)
        assert len(views) == 1 and torch.allclose(views[0].canvas, head * 2 - 1, atol=1e-5)


def test_face_weights_are_a_soft_ellipse_at_latent_resolution():
    weights = face_weights((0.25, 0.2, 0.75, 0.8), 16, 16)
    assert weights.shape == (1, 16, 16)
    assert weights.max() == 1 and weights[0, 8, 8] == 1  # the face's centre
    assert torch.isclose(weights.min(), torch.tensor(MASK_OUTSIDE)) and weights[0, 0, 0] == weights.min()
    row = weights[0, 8]
    assert torch.all(row[8:-1] >= row[9:]) and torch.all(row[1:9] >= row[:8])  # falls off away from the face
    soft = ((row > MASK_OUTSIDE + 1e-4) & (row < 1 - 1e-4)).sum()
    assert soft >= 2  # feathered, not a hard edge
    assert face_weights((0.25, 0.2, 0.75, 0.8), 64, 64).shape == (1, 64, 64)


def test_weighted_loss_counts_the_face_more_than_the_background():
    target = torch.zeros(2, 4, 8, 8)
    weights = torch.stack([face_weights((0.25, 0.25, 0.75, 0.75), 8, 8)] * 2)
    on_face, on_background = target.clone(), target.clone()
    on_face[:, :, 3:5, 3:5] = 1.0
    on_background[:, :, 0:2, 0:2] = 1.0
    assert torch.isclose(diffusion_loss(on_face, target), diffusion_loss(on_background, target))  # plain MSE
    assert diffusion_loss(on_face, target, weights) > 5 * diffusion_loss(on_background, target, weights)
    uniform = torch.ones(2, 1, 8, 8) * 0.3
    assert torch.isclose(diffusion_loss(on_face, target, uniform), diffusion_loss(on_face, target))


def test_view_pool_weights_match_the_latents():
    from celebbasis_ext.diffusers_adapter import DiffusersAdapter
    from celebbasis_ext.tuning import Subject, _ViewPool

    adapter = DiffusersAdapter(tiny_pipeline("tiny-sd1"))
    photo = FacePhoto(torch.rand(3, 80, 80), FACE_BOX_IN_HEAD, torch.rand(3, 160, 160), FACE)
    for mode in ("paper", "photo", "mixed"):
        options = TuneOptions(steps=3, pool_size=6, views=mode, loss_mask="face", mode="direct").validate()
        pool = _ViewPool(adapter, [Subject([photo])], options, 64, 0, adapter.device)
        assert pool.latents.shape == (6, 4, 8, 8)
        assert pool.weights.shape == (6, 1, 8, 8) and pool.weights.max() == 1
    plain = _ViewPool(adapter, [Subject([photo])], TuneOptions(steps=3, pool_size=6, mode="direct", loss_mask="none"),
                      64, 0, adapter.device)
    assert plain.weights is None
    # the default ("auto") weights the face, as "face" does
    default = _ViewPool(adapter, [Subject([photo])], TuneOptions(steps=3, pool_size=6, mode="direct"), 64, 0,
                        adapter.device)
    face = _ViewPool(adapter, [Subject([photo])], TuneOptions(steps=3, pool_size=6, mode="direct", loss_mask="face"),
                     64, 0, adapter.device)
    assert TuneOptions().loss_mask == "auto" and torch.equal(default.weights, face.weights)


@pytest.mark.parametrize("field, value, words", [
    ("views", "tiles", ["unknown views 'tiles'", "paper, photo, mixed"]),
    ("loss_mask", "eyes", ["unknown loss mask 'eyes'", "none or face"]),
])
def test_options_refuse_unknown_modes_clearly(field, value, words):
    with pytest.raises(BadInput) as error:
        TuneOptions(**{field: value}).validate()
    assert all(word in str(error.value) for word in words)


def test_tuning_runs_and_records_every_combination(tmp_path):
    """Each views x loss-mask combination tunes on a real photo through dlib, and the file says which."""
    pytest.importorskip("dlib")
    from PIL import Image
    from skimage import data

    from celebbasis_ext.diffusers_adapter import DiffusersAdapter
    from celebbasis_ext.face.encoders import load_face_encoder
    from celebbasis_ext.identity import load_identity
    from celebbasis_ext.pipeline import TuneRequest, prepare_faces, tune_identity

    adapter = DiffusersAdapter(tiny_pipeline("tiny-sd1"), model_name="tiny-sd1")
    encoder = load_face_encoder("dlib")
    photo = Image.fromarray(data.astronaut())
    faces = prepare_faces([photo], encoder=encoder)
    sample = faces.samples[0]
    assert sample.framing.size == sample.head_crop.size
    head_width = sample.head_face[2] - sample.head_face[0]
    framing_width = sample.framing_face[2] - sample.framing_face[0]
    assert framing_width < 0.8 * head_width  # the framing is wider than the head crop: hair and shoulders
    for views in ("paper", "photo", "mixed"):
        for mask in ("none", "face"):
            name = f"astro_{views}_{mask}"
            options = TuneOptions(steps=2, pool_size=2, views=views, loss_mask=mask)
            request = TuneRequest([photo], name, tmp_path, options, face_encoder="dlib",
                                  names_file=str(small_names_file(tmp_path)), basis_cache_dir=str(tmp_path / "b"))
            outcome = tune_identity(adapter, request, encoder=encoder)
            metadata = load_identity(outcome.path).metadata
            assert (metadata["views"], metadata["loss_mask"]) == (views, mask)
            assert torch.isfinite(outcome.result.coefficients).all()
    assert json.loads(metadata["coefficients"])
    # nothing asked: the measured default, photo views and the face mask (a face encoder found the face)
    request = TuneRequest([photo], "astro_default", tmp_path, TuneOptions(steps=2, pool_size=2), face_encoder="dlib",
                          names_file=str(small_names_file(tmp_path)), basis_cache_dir=str(tmp_path / "b"))
    metadata = load_identity(tune_identity(adapter, request, encoder=encoder).path).metadata
    assert (metadata["views"], metadata["loss_mask"]) == ("photo", "face")


def test_batch_files_record_the_loss_mask_that_ran(tmp_path):
    """The default ("auto") is made concrete per run: no face encoder, no face mask, and the file says so."""
    from celebbasis_ext.basis import basis_for
    from celebbasis_ext.batch import find_subjects, tune_batch
    from celebbasis_ext.diffusers_adapter import DiffusersAdapter
    from celebbasis_ext.identity import load_identity

    from helpers import noise_photo

    adapter = DiffusersAdapter(tiny_pipeline("tiny-sd1"), model_name="tiny-sd1")
    basis = basis_for(adapter, names_file=str(small_names_file(tmp_path)), k=8, cache_dir=str(tmp_path / "b"))
    (tmp_path / "people").mkdir()
    noise_photo(1).save(tmp_path / "people" / "ann.png")
    report = tune_batch(adapter, basis, find_subjects(tmp_path / "people"), tmp_path / "out",
                        TuneOptions(steps=2, pool_size=2, mode="direct"), face_encoder="none", log=lambda *args: None)
    assert [path.name for path in report.written] == ["ann.safetensors"]
    assert load_identity(report.written[0]).metadata["loss_mask"] == "none"


def test_face_mask_needs_a_face(tmp_path):
    from celebbasis_ext.pipeline import TuneRequest

    request = TuneRequest(["photo.jpg"], "zed", tmp_path, TuneOptions(mode="direct", loss_mask="face"),
                          face_encoder="none")
    with pytest.raises(BadInput, match="loss mask 'face' needs a face encoder"):
        request.validate()


def test_cli_takes_views_and_loss_mask_and_refuses_bad_ones(tmp_path, capsys, astronaut_path):
    from celebbasis_ext.cli import main

    folder = tmp_path / "model"
    tiny_pipeline("tiny-sd1").save_pretrained(folder)
    base = ["tune", str(astronaut_path), "--model", str(folder), "--steps", "2", "--out", str(tmp_path / "out"),
            "--names", str(small_names_file(tmp_path)), "--face-encoder", "none", "--mode", "direct"]
    assert main(base + ["--name", "zed_bad", "--views", "tiles"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown views 'tiles': choose paper, photo, mixed" in err and "Traceback" not in err
    assert main(base + ["--name", "zed_bad", "--loss-mask", "face"]) == 2
    assert "loss mask 'face' needs a face encoder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert main(base + ["--name", "zed_photo", "--views", "photo"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    from celebbasis_ext.identity import load_identity

    assert load_identity(path).metadata["views"] == "photo"


def test_api_and_service_take_views_and_loss_mask(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from celebbasis_ext.diffusers_adapter import DiffusersAdapter
    from celebbasis_ext.service import CelebBasisService, ServiceSettings
    from celebbasis_ext.webui.api import mount

    from helpers import b64_image

    adapter = DiffusersAdapter(tiny_pipeline("tiny-sd1"), model_name="tiny-sd1")
    settings = ServiceSettings(face_encoder="none", names_file=str(small_names_file(tmp_path)),
                               basis_cache_dir=str(tmp_path / "basis"), tune_defaults={"pool_size": 2})
    service = CelebBasisService(lambda: adapter, tmp_path / "embeddings", settings)
    options, _ = service.build_options(None, {"views": "mixed", "loss_mask": "default"})
    assert (options.views, options.loss_mask) == ("mixed", TuneOptions().loss_mask)
    app = FastAPI()
    mount(app, service)
    client = TestClient(app)
    bad = client.post("/celebbasis/v1/tune", json={"images": [b64_image()], "name": "zed", "views": "tiles"})
    assert bad.status_code == 400 and "unknown views 'tiles'" in bad.json()["detail"]
    bad = client.post("/celebbasis/v1/tune", json={"images": [b64_image()], "name": "zed", "loss_mask": "face"})
    assert bad.status_code == 400 and "needs a face encoder" in bad.json()["detail"]
    assert not service.out_dir.exists() or not list(service.out_dir.glob("*.safetensors"))
    good = client.post("/celebbasis/v1/tune", json={"images": [b64_image()], "name": "zed", "steps": 2,
                                                    "views": "photo"})
    assert good.status_code == 200, good.text
    assert good.json()["metadata"]["views"] == "photo" and good.json()["metadata"]["loss_mask"] == "none"
