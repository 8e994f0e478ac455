"""The views study's bookkeeping (benchmarks/views_study.py) and world B's teaching views.

The study's README tables come from ``summarise`` and ``markdown``: the mean
and the worst seed must be what the runs say, and the worst seed must be named
right. World B (planted_faces, framing "mixed") must really show the head small
on black where its recipe says so, and the photo's framing elsewhere.
"""

from __future__ import annotations

import pytest
import torch

from helpers import benchmark_module

pytest.importorskip("diffusers")


def _study():
    return benchmark_module("views_study", "views_study")


def _faces():
    return benchmark_module("planted_faces", "planted_faces")


def _run(seed, views, dlib, pixels, cosine, guard):
    return {"world": "faces-mixed", "seed": seed, "views": views, "loss_mask": "none", "seconds": 1.0,
            "dlib_identified": dlib, "pixel_identified": pixels, "cosine": cosine, "guard_ratio": guard,
            "guard_ratio_min": guard - 0.1, "dlib_face_share": 1.0, "people": []}


def test_summary_gives_mean_worst_and_the_worst_seed():
    runs = [_run(0, "photo", 1.0, 1.0, 0.30, 0.9), _run(1, "photo", 0.5, 1.0, 0.10, 0.8),
            _run(2, "photo", 0.5, 0.5, 0.20, 1.0), _run(0, "paper", 0.0, 0.5, 0.05, 0.7),
            _run(1, "paper", 0.0, 0.0, -0.10, 0.6)]
    table = _study().summarise(runs)
    photo, paper = table
    assert (photo["views"], paper["views"]) == ("photo", "paper")
    assert photo["seeds"] == [0, 1, 2] and paper["seeds"] == [0, 1]
    assert photo["dlib_identified"] == {"mean": pytest.approx(2 / 3), "worst": 0.5}
    assert photo["pixel_identified"] == {"mean": pytest.approx(2.5 / 3), "worst": 0.5}
    assert photo["cosine"]["worst"] == pytest.approx(0.10)
    # seeds 1 and 2 tie on dlib; seed 1 has the lower cosine, so it is the worst
    assert photo["worst_seed"] == 1
    assert paper["worst_seed"] == 1
    assert photo["guard_ratio_lowest"] == pytest.approx(0.7)

    text = _study().markdown(table)
    assert text.startswith("**faces-mixed**")
    photo_line = next(line for line in text.splitlines() if line.startswith("| photo |"))
    assert "0.67 (0.50)" in photo_line and "+0.20 (+0.10)" in photo_line and "0.90 (0.70)" in photo_line
    assert photo_line.endswith("| 1 |")  # the worst seed, named


def test_on_black_puts_the_head_small_on_a_black_canvas():
    faces = _faces()
    picture = torch.rand(3, 64, 64) * 2 - 1
    for placement in faces.BLACK_PLACEMENTS:
        canvas = faces._on_black(picture, placement)
        assert canvas.shape == picture.shape
        scale, x, y = placement
        side = round(64 * scale)
        top, left = round(y * 64 - side / 2), round(x * 64 - side / 2)
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[top: top + side, left: left + side] = True
        assert torch.all(canvas[:, ~inside] == -1.0)  # black everywhere else
        assert canvas[:, inside].std() > 0.1  # the head is there, not black
        assert inside.float().mean() <= 0.31  # small: at most 55% of the side


def test_world_b_recipe_names_its_small_captions():
    faces = _faces()
    small = [text for text in faces.FULL.templates if " small " in text]
    assert small, "world B draws the head on black for the engine's 'small' captions"
    assert faces.FULL_MIXED.after == faces.FULL and faces.FULL_MIXED.black_share == faces.BLACK_SHARE
    assert faces.small_captions(faces.FULL.templates) == [faces.FULL.templates.index(text) for text in small]
    with pytest.raises(ValueError, match="framing"):
        faces.build_face_world(framing="on-black")
    with pytest.raises(ValueError, match="views on black"):  # world B's framing with world A's recipe
        faces.build_face_world(framing="mixed", recipe=faces.FULL)
    with pytest.raises(ValueError, match="views on black"):
        faces.build_face_world(framing="photo", recipe=faces.FULL_MIXED)
