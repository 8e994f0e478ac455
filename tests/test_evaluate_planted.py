"""The identity score on renders of real faces: a planted person's renders score higher against that person's
photo than renders of another planted person do.

The planted-face world (``benchmarks/planted_faces.py``, the session fixture ``planted_face_world``) is a tiny
SD1 that renders each planted code as that person's photo. The scores go through what ``celebbasis eval``
runs: the runner, the dlib judge, the summary and its paired difference between two variants: "planted
person" renders each identity from its own code, "another person" from the next identity's code. Identities
whose renders (or their neighbour's) show no face dlib finds at 64 px are left out of the comparison, as the
report leaves them out of the mean.
"""

from __future__ import annotations

import pytest

pytest.importorskip("benchmarks.planted_faces", reason="needs the planted-face world of the views branch "
                                                       "(benchmarks/planted_faces.py)")


def test_a_planted_identity_scores_higher_than_another_planted_person(planted_face_world, tmp_path):
    from celebbasis_ext.evaluate.prompts import Prompt
    from celebbasis_ext.evaluate.runner import EvalPlan, Variant, run_eval
    from celebbasis_ext.evaluate.scoring import choose_judge, photo_reference

    world = planted_face_world
    judge = choose_judge(["none"], "dlib")  # named: the face model every test machine has
    names = [f"person{i}" for i in range(len(world.photos))]
    references = {}
    for name, photo in zip(names, world.photos):
        reference, why = photo_reference([photo], judge.encoder)
        assert reference is not None, f"{name}: {why}"
        references[name] = reference
    position = {name: index for index, name in enumerate(names)}

    def render(item):
        who = position[item.people[0]]
        if item.variant.label == "another person":
            who = (who + 1) % len(names)
        return world.render(world.codes[who], [item.seed], item.prompt.template)[0]

    tokens = {name: name for name in names}
    plan = EvalPlan(out_dir=tmp_path / "report", variants=[Variant("planted person", tokens),
                                                           Variant("another person", tokens)],
                    references=references, prompts=[Prompt("single", 0, "a photo of {}")], seeds=list(range(6)),
                    judge=judge, render=render)
    outcome = run_eval(plan)
    planted, other = outcome.summary["variants"]
    assert planted["face_rate"] > 0.5 and other["face_rate"] > 0.5  # the judge finds most rendered faces (64 px)
    compared = 0
    for name in names:
        mine, theirs = planted["identities"][name]["identity"], other["identities"][name]["identity"]
        if mine.mean is None or theirs.mean is None:
            continue  # no face found in any render of one of the two people
        compared += 1
        assert mine.mean > theirs.mean, (name, mine, theirs)
    assert compared >= 3
    difference = other["vs_first"]["identity"]
    # another person's renders score lower on average; with three people the 95% interval is wide (t = 4.3),
    # so only its mean is held below zero (in a world taught on 2 threads its top end reached +0.006)
    assert difference.n >= 3 and difference.mean < 0 and difference.low < difference.mean < difference.high, \
        difference
