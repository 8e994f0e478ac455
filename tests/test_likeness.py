"""The likeness score on real renders of planted faces: the right person scores above every other.

The planted face world (benchmarks/planted_faces.py, session fixture
``planted_face_world``) has a UNet taught to draw planted code i as person i
of a few real photos (three in the quick world). Each code is written as an ordinary embedding file; the
service renders it through its preview (the world's pipeline standing in for
the host's txt2img) and scores the renders with its own likeness path (the
face encoder the tab and the API use, dlib here) against each person's photo.
"""

from __future__ import annotations

import torch

from celebbasis_ext.adapter import EXPORT_KEYS
from celebbasis_ext.identity import Identity, load_identity, save_identity
from celebbasis_ext.service import CelebBasisService, ServiceSettings

from helpers import needs_dlib

SEEDS = (0,)  # one render per person: each preview re-reads the photo (dlib), ~1 s a call on 2 cores


def world_service(world, folder):
    """The service on the world's model; its preview renders an embedding file with the world's pipeline."""
    renders = {}  # the same file, prompt and seed give the same picture: rendered once

    def render(path, name, templates, seed):
        identity = load_identity(path)
        vectors = torch.cat([identity.vectors[key] for key in EXPORT_KEYS[identity.family]], dim=-1)
        images = []
        for offset, template in enumerate(templates):
            key = (name, template, seed + offset)
            if key not in renders:
                renders[key] = world.render(vectors, [seed + offset], template)[0]
            images.append(renders[key])
        return images

    return CelebBasisService(lambda: world.adapter, folder, ServiceSettings(face_encoder="dlib"), render=render)


@needs_dlib
def test_likeness_scores_each_planted_person_above_every_other(planted_face_world, tmp_path):
    world = planted_face_world
    service = world_service(world, tmp_path / "embeddings")
    count = len(world.codes)
    for person in range(count):
        identity = Identity.from_embedding(f"planted{person}", world.adapter.family,
                                           world.embedding(world.codes[person]), world.adapter.encoder_widths,
                                           world.codes[person])
        save_identity(identity, service.out_dir)

    def likeness(person, photo):
        """The service's likeness of person's renders against one photo, over SEEDS."""
        results = [service.preview(f"planted{person}", photos=[world.photos[photo]], count=1, seed=seed)
                   for seed in SEEDS]
        scores = [result["likeness"] for result in results]
        assert all(score is not None for score in scores), (person, photo, [r["note"] for r in results])
        return sum(scores) / len(scores)

    table = [[likeness(person, photo) for photo in range(count)] for person in range(count)]
    shown = "\n".join(" ".join(f"{score:.3f}" for score in row) for row in table)
    for person, row in enumerate(table):
        others = [score for photo, score in enumerate(row) if photo != person]
        assert row[person] > max(others), f"person {person}: renders x photos\n{shown}"
    # the score was recorded for the identities table, as after a preview in the tab
    recorded = {row["name"]: row["likeness"] for row in service.identities()}
    assert set(recorded) == {f"planted{person}" for person in range(count)}
    assert all(value is not None for value in recorded.values())
