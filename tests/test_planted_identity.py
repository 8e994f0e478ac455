"""Tuning finds a planted identity: the small version of benchmarks/planted_identity.py, over three seeds.

A tiny SD2-architecture model (v-prediction) is first taught, for 200 UNet
steps, to draw six identities (coefficient pairs in the celeb basis, spliced
into the captions by the diffusers adapter) as six latent pictures; then one
identity's DDIM renders are handed to ``tune()`` (direct mode, its own random
start, no augmentation) and the result is compared with the plant. Each seed
builds its own world; every assertion holds for every seed, so for the worst.
Only relations are asserted, with margins that held on every seed tried
(0-5); ``PLANTED_IDENTITY_SEEDS`` (comma-separated) picks others. About 30 s
per seed on one CPU thread.
"""

from __future__ import annotations

import os

import pytest
import torch

from helpers import benchmark_module

SEEDS = tuple(int(seed) for seed in os.environ.get("PLANTED_IDENTITY_SEEDS", "0,1,2").split(","))


def _benchmark_module():
    return benchmark_module("planted_identity", "planted_identity_benchmark")


@pytest.fixture(scope="module")
def seeds_result():
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    bench = _benchmark_module()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tensors are tiny: one thread is as fast, and much faster on a busy machine
    try:
        yield bench.run_seeds([bench.Config.quick(seed=seed) for seed in SEEDS], log=lambda *args: None)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=range(len(SEEDS)), ids=[f"seed{seed}" for seed in SEEDS])
def report(seeds_result, request):
    return seeds_result["reports"][request.param]


def test_the_summary_gives_the_mean_and_the_worst_seed(seeds_result):
    bench = _benchmark_module()
    summary = seeds_result["summary"]["direct"]
    per_seed = [bench.seed_figures(report, "direct") for report in seeds_result["reports"]]
    cosines = [figures["cosine_learned_planted"] for figures in per_seed]
    entry = summary["cosine_learned_planted"]
    assert entry["worst"] == min(cosines) and entry["worst_seed"] == SEEDS[cosines.index(min(cosines))]
    assert abs(entry["mean"] - sum(cosines) / len(cosines)) < 1e-9
    ratios = [figures["probe_ratio"] for figures in per_seed]
    assert summary["probe_ratio"]["worst"] == max(ratios)  # lower is better: the worst is the highest
    assert summary["found"]["worst"] == 1.0  # every seed's learned render is nearest its own plant


def _others(report):
    return [i for i in range(len(report["identities"])) if i != report["planted_index"]]


def test_toy_codec_round_trips_latents():
    bench = _benchmark_module()
    codec = bench.ToyCodec()
    latent = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(SEEDS[0])) * 1.5
    seen = codec.encode(bench.image_tensor(codec.decode(latent)).unsqueeze(0))[0]
    assert (seen - latent.clamp(-codec.limit, codec.limit)).abs().max() < 0.02


def test_the_taught_model_reads_its_text(report):
    """Precondition: without it the plant could not be found (a random model ignores the text)."""
    planted = report["planted_index"]
    render_truth = report["render_truth_mse"][planted]
    assert min(range(len(render_truth)), key=render_truth.__getitem__) == planted, render_truth
    # How sharply the quick world's 200 teaching steps tell identities apart depends on the library stack's
    # numerics: at seed 0 the ratio was 0.73 (torch 2.13, transformers 5) and 0.94 (Neo's torch 2.11,
    # transformers 4.56); seeds 1-2 gave 0.25-0.57. The plant must still be the clear best.
    assert report["loss_at_planted"] < 0.95 * min(report["loss_at_others"])


def test_tuning_lowers_the_diffusion_loss(report):
    figures = report["modes"]["direct"]
    assert figures["loss_last_20pct"] < figures["loss_first_20pct"]
    # the same noise, timesteps and templates at the start and at the result
    assert figures["probe_loss_learned"] < 0.85 * figures["probe_loss_start"]


def test_loss_at_the_learned_embedding_beats_every_wrong_identity(report):
    figures = report["modes"]["direct"]
    assert figures["probe_loss_learned"] < 0.95 * min(report["loss_at_others"])  # margin: see above
    assert figures["probe_loss_learned"] < 1.1 * report["loss_at_planted"]


def test_learned_coefficients_are_nearest_the_plant(report):
    figures = report["modes"]["direct"]
    assert figures["cosine_learned_planted"] > max(figures["cosine_learned_others"]) + 0.1
    assert figures["cosine_learned_planted"] > figures["cosine_start_planted"] + 0.1


def test_learned_embedding_renders_like_the_plant(report):
    figures = report["modes"]["direct"]
    planted = report["planted_index"]
    assert figures["render_nearest_identity"] == planted
    assert figures["render_mse_to_identities"][planted] < 0.5 * figures["render_mse_start_to_targets"]
