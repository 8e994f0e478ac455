"""The benchmark and tune-batch commands run and report consistent figures."""

import json

from celebbasis_ext.cli import main

from helpers import noise_photo, small_names_file


def test_bench_reports_step_floor_and_ratio(capsys, tmp_path):
    out = tmp_path / "bench.json"
    code = main(["bench", "--arch", "tiny-sd1", "--steps", "2", "--repeats", "1", "--identity-steps", "2",
                 "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["step_seconds"] > 0 and report["floor_seconds"] > 0
    assert abs(report["ratio"] - report["step_seconds"] / report["floor_seconds"]) < 1e-9
    assert report["identity_steps"] == 2 and report["peak_memory_mb"] > 0
    assert report["basis_cached_seconds"] < report["basis_build_seconds"] + 1
    assert "ratio" in capsys.readouterr().out


def test_bench_takes_step_and_floor_samples_in_turn(capsys, tmp_path, monkeypatch):
    """Interleaved, so that a busy machine slows both alike; min and median of each, both ratios."""
    from celebbasis_ext import bench, tuning

    order = []
    real_tune, real_floor = tuning.tune, bench.floor_step_times

    def tune(*args, **kwargs):
        order.append(("step", args[4].steps))
        return real_tune(*args, **kwargs)

    def floor(*args, **kwargs):
        order.append(("floor", args[-1]))
        return real_floor(*args, **kwargs)

    monkeypatch.setattr(tuning, "tune", tune)
    monkeypatch.setattr(bench, "floor_step_times", floor)
    out = tmp_path / "bench.json"
    code = main(["bench", "--arch", "tiny-sd1", "--steps", "5", "--repeats", "3", "--identity-steps", "2",
                 "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    # the warm-up and the one-identity run are 2-step runs; each sample times steps 2..5 against 4 floor steps
    assert [call for call in order if call[1] != 2] == [("step", 5), ("floor", 4)] * 3
    report = json.loads(out.read_text())
    for kind in ("step", "floor"):
        samples = report[f"{kind}_samples"]
        assert len(samples) == 3 and len(report[f"{kind}_cpu_samples"]) == 3
        assert report[f"{kind}_min_seconds"] == min(samples)
        assert report[f"{kind}_seconds"] == sorted(samples)[1]  # the median of three
    assert abs(report["ratio_of_mins"] - min(report["step_samples"]) / min(report["floor_samples"])) < 1e-9
    assert abs(report["cpu_ratio"] - sorted(report["step_cpu_samples"])[1] / sorted(report["floor_cpu_samples"])[1]) \
        < 1e-9
    assert report["threads"] >= 1 and len(report["load_average"]) == 2
    printed = capsys.readouterr().out
    assert "(medians)" in printed and "(minima)" in printed and "load average" in printed

    assert main(["bench", "--arch", "tiny-sd1", "--steps", "1"]) == 2
    assert "at least 2 steps" in capsys.readouterr().err


def test_tune_batch_one_identity_per_photo_and_folder(capsys, tmp_path):
    from conftest import tiny_pipeline

    model = tmp_path / "model"
    tiny_pipeline("tiny-sd1").save_pretrained(model)
    photos = tmp_path / "people"
    (photos / "Carla Díaz").mkdir(parents=True)
    noise_photo(1).save(photos / "ann.png")
    noise_photo(2).save(photos / "Carla Díaz" / "one.png")
    noise_photo(3).save(photos / "Carla Díaz" / "two.png")
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    code = main(["tune-batch", str(photos), "--model", str(model), "--out", str(out), "--steps", "2",
                 "--mode", "direct", "--face-encoder", "none", "--names", str(small_names_file(tmp_path))])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["Carla_D_az.safetensors", "ann.safetensors"]
    assert "per minute" in captured.out


def test_channels_last_only_during_tuning_and_the_same_prediction(tmp_path):
    import torch

    from conftest import tiny_pipeline
    from celebbasis_ext.diffusers_adapter import DiffusersAdapter
    from celebbasis_ext.model_guard import state_digest

    adapter = DiffusersAdapter(tiny_pipeline("tiny-sd1"))
    convolutions = [p for p in adapter.pipe.unet.parameters() if p.dim() == 4 and p.shape[-1] > 1]  # 1x1: both
    assert convolutions
    latents, timesteps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([5, 600])
    learned = torch.randn(2, 2, adapter.embedding_width, generator=torch.Generator().manual_seed(1))
    before = state_digest(adapter.frozen_modules())
    with adapter.tuning_session(), torch.no_grad():
        plain = adapter.predict(latents, timesteps, adapter.encode_prompts(["a photo of {}"] * 2, learned))
    adapter.channels_last = True
    with adapter.tuning_session(), torch.no_grad():
        assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convolutions)
        fast = adapter.predict(latents, timesteps, adapter.encode_prompts(["a photo of {}"] * 2, learned))
    assert all(p.is_contiguous() for p in convolutions)  # the layout is given back
    assert state_digest(adapter.frozen_modules()) == before
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)


def test_compile_wraps_the_unet_without_replacing_it(monkeypatch):
    import torch

    from conftest import tiny_pipeline
    from celebbasis_ext.diffusers_adapter import DiffusersAdapter

    adapter = DiffusersAdapter(tiny_pipeline("tiny-sd1"))
    unet = adapter.pipe.unet
    compiled = []

    class Wrapper(torch.nn.Module):  # what torch.compile returns: an OptimizedModule with _orig_mod
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

        def forward(self, *args, **kwargs):
            compiled[-1][1] += 1
            return self._orig_mod(*args, **kwargs)

    def fake_compile(module):
        compiled.append([module, 0])
        return Wrapper(module)

    monkeypatch.setattr(torch, "compile", fake_compile)
    adapter.compile_unet = True
    learned = torch.randn(2, 2, adapter.embedding_width)
    with adapter.tuning_session(), torch.no_grad():
        for _ in range(3):
            adapter.predict(torch.randn(2, 4, 8, 8), torch.tensor([5, 600]),
                            adapter.encode_prompts(["a photo of {}"] * 2, learned))
    assert len(compiled) == 1 and compiled[0][0] is unet and compiled[0][1] == 3  # compiled once, used each step
    assert adapter.pipe.unet is unet
