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
