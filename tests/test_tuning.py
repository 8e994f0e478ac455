"""The tuning loop: shapes, normalisation, EMA, reproducibility, cancel, faults, model untouched."""

import math

import pytest
import torch

from celebbasis_ext.basis import basis_for
from celebbasis_ext.diffusers_adapter import DiffusersAdapter
from celebbasis_ext.errors import BadInput, Cancelled, TuningFailed
from celebbasis_ext.model_guard import state_digest
from celebbasis_ext.tuning import CoefficientMapper, TuneOptions, tune

from helpers import assert_bit_identical, noise_photo, small_names_file, state_copy


def _setup(pipe, tmp_path):
    adapter = DiffusersAdapter(pipe)
    basis = basis_for(adapter, names_file=small_names_file(tmp_path), k=512, cache_dir=tmp_path / "basis")
    return adapter, basis


def test_mapper_outputs_unit_norm_per_token():
    mapper = CoefficientMapper(512, 64)
    out = mapper(torch.randn(3, 512))
    assert out.shape == (3, 2, 64)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3, 2), atol=1e-5)


def test_tune_each_family_leaves_model_bit_identical(any_pipeline, tmp_path):
    adapter, basis = _setup(any_pipeline, tmp_path)
    before = state_digest(adapter.frozen_modules())
    seen = []
    features = torch.nn.functional.normalize(torch.randn(1, 2, 512), dim=-1)
    result = tune(adapter, basis, [noise_photo()], features, TuneOptions(steps=6, report_every=3),
                  progress=seen.append)
    assert state_digest(adapter.frozen_modules()) == before
    assert result.coefficients.shape == (2, basis.k)
    assert result.embedding.shape == (2, adapter.embedding_width)
    assert torch.allclose(result.embedding, basis.embed(result.coefficients))
    assert [p.step for p in seen] == [1, 3, 6] and seen[-1].eta_seconds == 0
    assert len(result.losses) == 6 and all(math.isfinite(v) for v in result.losses)
    # The EMA of unit vectors is close to, but within, the unit ball.
    norms = result.coefficients.norm(dim=-1)
    assert torch.all(norms <= 1 + 1e-5) and torch.all(norms > 0.5)


def test_same_seed_same_result_other_seed_differs(sd1_pipeline, tmp_path):
    adapter, basis = _setup(sd1_pipeline, tmp_path)
    features = torch.nn.functional.normalize(torch.randn(1, 2, 128), dim=-1)
    runs = [tune(adapter, basis, [noise_photo()], features, TuneOptions(steps=4, seed=seed)) for seed in (7, 7, 8)]
    assert torch.equal(runs[0].coefficients, runs[1].coefficients)
    assert not torch.equal(runs[0].coefficients, runs[2].coefficients)


def test_direct_mode_needs_no_features(sd1_pipeline, tmp_path):
    adapter, basis = _setup(sd1_pipeline, tmp_path)
    result = tune(adapter, basis, [noise_photo(1), noise_photo(2)], None, TuneOptions(steps=3, mode="direct"))
    assert result.coefficients.shape == (2, basis.k)
    with pytest.raises(BadInput, match="paper mode needs a face feature: pick a face encoder, or use mode 'direct'"):
        tune(adapter, basis, [noise_photo()], None, TuneOptions(steps=3, mode="paper"))


def test_cancel_stops_and_restores(sd1_pipeline, tmp_path):
    adapter, basis = _setup(sd1_pipeline, tmp_path)
    before = state_digest(adapter.frozen_modules())
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        tune(adapter, basis, [noise_photo()], None, TuneOptions(steps=50, mode="direct"), should_cancel=should_cancel)
    assert len(calls) == 4
    assert state_digest(adapter.frozen_modules()) == before


def test_out_of_memory_inside_a_step_restores_model(sd1_pipeline, tmp_path, monkeypatch):
    adapter, basis = _setup(sd1_pipeline, tmp_path)
    before = state_digest(adapter.frozen_modules())
    original = adapter.predict
    count = []

    def failing_predict(*args):
        count.append(1)
        if len(count) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args)

    monkeypatch.setattr(adapter, "predict", failing_predict)
    with pytest.raises(TuningFailed, match="medvram"):
        tune(adapter, basis, [noise_photo()], None, TuneOptions(steps=5, mode="direct"))
    assert state_digest(adapter.frozen_modules()) == before


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_loss_is_a_clear_failure_and_leaves_the_model_bit_identical(sd1_pipeline, tmp_path, monkeypatch,
                                                                              bad):
    adapter, basis = _setup(sd1_pipeline, tmp_path)
    before = state_copy(adapter.frozen_modules())
    original = adapter.predict
    calls = []

    def diverging(*args):  # finite at first, then NaN/inf for two optimizer steps before the check sees it
        calls.append(1)
        return original(*args) * (bad if len(calls) > 1 else 1.0)

    monkeypatch.setattr(adapter, "predict", diverging)
    with pytest.raises(TuningFailed) as failure:
        tune(adapter, basis, [noise_photo()], None, TuneOptions(steps=6, mode="direct", report_every=3))
    message = str(failure.value)
    assert "the loss became NaN or infinite" in message and "fp32" in message and "lower learning rate" in message
    assert len(calls) == 3  # stopped at the first check after it diverged
    assert_bit_identical(before, state_copy(adapter.frozen_modules()))


@pytest.mark.parametrize("options, words", [
    ({"steps": 0}, "steps must be a whole number from 1 to 20000, not 0"),
    ({"steps": -5}, "not -5"),
    ({"steps": 10**9}, "not 1000000000"),
    ({"learning_rate": float("nan")}, "learning rate must be a number in (0, 1], not nan"),
    ({"learning_rate": -1.0}, "not -1.0"),
    ({"mode": "magic"}, "unknown mode 'magic': choose paper or direct"),
    ({"dtype": "fp8"}, "unknown dtype 'fp8': choose one of auto, fp32, fp16, bf16"),
    ({"batch_size": 0}, "batch size must be from 1 to 64, not 0"),
    ({"seed": -1}, "seed must be a non-negative whole number, not -1"),
    ({"resolution": 65}, "resolution must be a multiple of 8 from 64 to 2048, not 65"),
    ({"templates": ["no slot"]}, "each caption template needs exactly one {} slot"),
    ({"report_every": 0}, "report_every must be a whole number from 1, not 0"),
    ({"ema_decay": 1.0}, "EMA decay must be in [0, 1), not 1.0"),
    ({"ema_decay": -0.1}, "not -0.1"),
])
def test_bad_options_are_refused(options, words):
    with pytest.raises(BadInput) as refused:
        TuneOptions(**options).validate()
    assert words in str(refused.value)


def test_gradient_checkpointing_is_switched_back(sd1_pipeline, tmp_path):
    adapter, basis = _setup(sd1_pipeline, tmp_path)
    adapter.gradient_checkpointing = True
    try:
        before = state_digest(adapter.frozen_modules())
        flags = [m.gradient_checkpointing for m in adapter.pipe.unet.modules() if hasattr(m, "gradient_checkpointing")]
        tune(adapter, basis, [noise_photo()], None, TuneOptions(steps=2, mode="direct"))
        after = [m.gradient_checkpointing for m in adapter.pipe.unet.modules() if hasattr(m, "gradient_checkpointing")]
        assert after == flags and state_digest(adapter.frozen_modules()) == before
    finally:
        adapter.gradient_checkpointing = False


def test_group_of_identities_learns_each_its_own(sd1_pipeline, tmp_path):
    from celebbasis_ext.tuning import Subject, tune_group

    adapter, basis = _setup(sd1_pipeline, tmp_path)
    before = state_digest(adapter.frozen_modules())
    features = torch.nn.functional.normalize(torch.randn(2, 1, 2, 64), dim=-1)
    subjects = [Subject([noise_photo(i)], features[i]) for i in range(2)]
    results = tune_group(adapter, basis, subjects, TuneOptions(steps=3))
    assert len(results) == 2 and not torch.equal(results[0].coefficients, results[1].coefficients)
    assert all(r.coefficients.shape == (2, basis.k) for r in results)
    assert state_digest(adapter.frozen_modules()) == before
    direct = tune_group(adapter, basis, subjects, TuneOptions(steps=2, mode="direct"))
    assert not torch.equal(direct[0].coefficients, direct[1].coefficients)


def test_host_random_state_is_left_alone(sd1_pipeline, tmp_path):
    import random

    adapter, basis = _setup(sd1_pipeline, tmp_path)
    torch.manual_seed(1234)
    random.seed(99)
    expected_torch, expected_python = torch.rand(3), random.random()
    torch.manual_seed(1234)
    random.seed(99)
    tune(adapter, basis, [noise_photo()], None, TuneOptions(steps=2, mode="direct", seed=5))
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_python


def test_result_is_the_bias_corrected_ema_of_the_steps(sd1_pipeline, tmp_path):
    """The learned coefficients are the 0.99 EMA of every step's coefficients, started at zero and divided by
    1 - 0.99^n: no weight is left on the untrained first output (the authors' EMA keeps 0.99^n of it)."""
    adapter, basis = _setup(sd1_pipeline, tmp_path)
    features = torch.nn.functional.normalize(torch.randn(1, 2, 128), dim=-1)
    steps, decay = 12, 0.9
    seen = []
    result = tune(adapter, basis, [noise_photo()], features,
                  TuneOptions(steps=steps, report_every=1, ema_decay=decay, learning_rate=0.05), progress=seen.append)
    trajectory = torch.stack([update.coefficients[0] for update in seen])
    assert trajectory.shape == (steps, 2, basis.k)
    weights = (1 - decay) * decay ** torch.arange(steps - 1, -1, -1, dtype=torch.float32)
    expected = torch.einsum("s,spk->pk", weights, trajectory) / (1 - decay ** steps)
    torch.testing.assert_close(result.coefficients, expected)
    original = trajectory[0]
    for current in trajectory[1:]:
        original = decay * original + (1 - decay) * current
    assert not torch.allclose(result.coefficients, original, atol=1e-4)  # the first output no longer dominates


def test_a_short_run_encodes_only_the_views_it_can_draw(sd1_pipeline, tmp_path, monkeypatch):
    adapter, basis = _setup(sd1_pipeline, tmp_path)
    encoded = []
    real_encode = adapter.encode_images
    monkeypatch.setattr(adapter, "encode_images", lambda pixels: encoded.append(len(pixels)) or real_encode(pixels))
    tune(adapter, basis, [noise_photo()], None, TuneOptions(steps=3, batch_size=2, pool_size=64, mode="direct"))
    assert sum(encoded) == 6  # 3 steps x 2 views, not the 64 of the pool
    encoded.clear()
    tune(adapter, basis, [noise_photo()], None, TuneOptions(steps=40, batch_size=2, pool_size=16, mode="direct"))
    assert sum(encoded) == 16  # a long run encodes the whole pool, once
