"""The planted-face world (benchmarks/planted_faces.py): real faces in, real faces out, judged by dlib.

The world is a test instrument for tuning (the views study, likeness
scores): these tests check that it is one. Its codec is lossless, its renders
are faces dlib finds, each planted code renders its own person (by dlib's
likeness and by pixels), and the steering prompt changes the render.
"""

from __future__ import annotations

import numpy as np
import torch


def test_codec_round_trips_grey_pictures(planted_face_world):
    world = planted_face_world
    vae = world.pipe.vae
    assert world.pipe.vae_scale_factor == 2 and world.adapter.resolution == 64
    pictures = torch.stack([_pixels(target) for target in world.targets])
    latents = vae.encode(pictures).latent_dist.mean
    assert latents.shape == (len(world.targets), 4, 32, 32)
    back = vae.decode(latents).sample
    assert (back - pictures).abs().max() < 1e-5  # the targets are grey already: nothing lost
    assert torch.allclose(world.adapter.encode_images(pictures), latents)


def test_world_shape_and_codes(planted_face_world):
    world = planted_face_world
    n, tokens, k = world.codes.shape
    assert (n, tokens) == (len(world.recipe.people), 2) and n >= 3 and k == world.basis.k
    assert torch.allclose(world.codes.norm(dim=-1), torch.ones(n, 2), atol=1e-5)
    assert len(world.photos) == len(world.targets) == n
    assert world.embedding(world.codes[0]).shape == (2, world.adapter.embedding_width)


def test_each_code_renders_its_own_person(planted_face_world):
    """dlib finds faces in the renders, and they look more like the planted person than like the others.

    Over every planted person (the quick world has three): dlib finds a face in
    most renders, and the photo the found faces are most like is the person's
    own, for every person.
    """
    world = planted_face_world
    seeds = [11, 12, 13]
    found = 0
    for person in range(len(world.codes)):
        renders = world.render(world.codes[person], seeds)
        assert all(image.size == (64, 64) for image in renders)
        table = world.likeness(renders)
        seen = ~np.isnan(table[:, 0])
        found += int(seen.sum())
        assert seen.any(), f"dlib found no face in any render of person {person}"
        likeness = table[seen].mean(axis=0)
        assert int(np.argmax(likeness)) == person, (person, likeness)
    assert found >= 0.8 * len(seeds) * len(world.codes)


def test_renders_differ_by_person_and_match_their_own_picture(planted_face_world):
    world = planted_face_world
    targets = torch.stack([_pixels(target) for target in world.targets])
    for person in range(len(world.codes)):
        render = _pixels(world.render(world.codes[person], [5])[0])
        distances = ((targets - render) ** 2).mean(dim=(1, 2, 3))
        assert int(distances.argmin()) == person, distances


def test_the_steering_prompt_steers(planted_face_world):
    world = planted_face_world
    from planted_faces import STEER_PROMPT

    plain = _pixels(world.render(world.codes[0], [3])[0])
    steered = _pixels(world.render(world.codes[0], [3], STEER_PROMPT)[0])
    target = _pixels(world.targets[0])
    assert ((steered + target) ** 2).mean() < ((steered - target) ** 2).mean()  # nearer the negative
    assert (plain - steered).abs().mean() > 0.3


def _pixels(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
