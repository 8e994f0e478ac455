"""Faults: a process killed while saving, out of memory through the CLI, stale temporaries, a diverging loss."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from celebbasis_ext.adapter import ModelFamily
from celebbasis_ext.identity import Identity, load_identity, save_identity

ROOT = Path(__file__).resolve().parents[1]


def _identity(name="kate"):
    return Identity.from_embedding(name, ModelFamily.SD1, torch.randn(2, 768), (768,))


def test_killed_while_saving_leaves_previous_file_and_no_partial(tmp_path):
    previous = save_identity(_identity(), tmp_path)
    content = previous.read_bytes()
    marker = tmp_path / "written"
    script = textwrap.dedent(f"""
        import os, sys, time, torch
        sys.path.insert(0, {str(ROOT)!r})
        from celebbasis_ext.adapter import ModelFamily
        from celebbasis_ext.identity import Identity, save_identity
        real_replace = os.replace
        def stall(src, dst):
            open({str(marker)!r}, "w").close()
            time.sleep(60)
        os.replace = stall
        save_identity(Identity.from_embedding("kate", ModelFamily.SD1, torch.randn(2, 768), (768,)),
                      {str(tmp_path)!r}, overwrite=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the child never reached the rename"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    safetensors_files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert safetensors_files == ["kate.safetensors"]
    assert previous.read_bytes() == content
    load_identity(previous)  # still a valid file
    leftovers = list(tmp_path.glob(".kate.*.tmp"))
    assert len(leftovers) == 1  # the killed writer's temporary, hidden and not .safetensors
    old = time.time() - 3600
    os.utime(leftovers[0], (old, old))
    save_identity(_identity(), tmp_path, overwrite=True)
    assert not list(tmp_path.glob(".kate.*.tmp"))


def test_out_of_memory_in_cli_gives_advice(capsys, tmp_path, monkeypatch):
    from celebbasis_ext import diffusers_adapter
    from celebbasis_ext.cli import main
    from conftest import tiny_pipeline
    from helpers import noise_photo, small_names_file

    model = tmp_path / "model"
    tiny_pipeline("tiny-sd1").save_pretrained(model)
    photo = tmp_path / "p.png"
    noise_photo().save(photo)

    def out_of_memory(self, *args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(diffusers_adapter.DiffusersAdapter, "predict", out_of_memory)
    code = main(["tune", str(photo), "--model", str(model), "--name", "oomcbx", "--out", str(tmp_path / "out"),
                 "--steps", "3", "--mode", "direct", "--face-encoder", "none", "--names", str(small_names_file(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: out of GPU memory" in err and "--medvram" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_a_host_leaves_its_model_bit_identical_and_writes_nothing(tmp_path, monkeypatch, bad):
    """A loss that diverges inside A1111 (stand-in): one clear message, no file, the host's model unchanged."""
    from celebbasis_ext.errors import TuningFailed
    from celebbasis_ext.pipeline import TuneRequest, tune_identity
    from celebbasis_ext.tuning import TuneOptions
    from helpers import assert_bit_identical, noise_photo, small_names_file, state_copy
    from test_a1111_adapter import make_adapter

    host, adapter = make_adapter(tmp_path, "sd1", resolution=64)
    model = host.shared.sd_model
    before = state_copy([model])
    original = adapter.predict
    monkeypatch.setattr(adapter, "predict", lambda *args: original(*args) * bad)
    out_dir = Path(host.shared.cmd_opts.embeddings_dir) / "celebbasis"
    request = TuneRequest(photos=[noise_photo()], name="zqxnan", out_dir=out_dir, face_encoder="none",
                          options=TuneOptions(steps=4, mode="direct", pool_size=4, resolution=64, report_every=2),
                          names_file=str(small_names_file(tmp_path)), k=64, basis_cache_dir=str(tmp_path / "basis"))
    with pytest.raises(TuningFailed, match=r"the loss became NaN or infinite; try fp32 \(--dtype fp32\) or a lower"):
        tune_identity(adapter, request)
    assert host.shared.sd_model is model
    assert_bit_identical(before, state_copy([model]))
    assert not out_dir.exists() or not any(out_dir.iterdir())
