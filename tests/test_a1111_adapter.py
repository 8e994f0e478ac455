"""The A1111 adapter on the stand-in host (tests/host_standins/a1111): tiny SD1, SD2 and SDXL
models shaped like ldm's LatentDiffusion and sgm's DiffusionEngine after A1111's hijack."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch

from celebbasis_ext.errors import BadInput, UnsupportedModel
from celebbasis_ext.model_guard import state_digest

STANDIN = Path(__file__).resolve().parent / "host_standins" / "a1111"
if str(STANDIN) not in sys.path:
    sys.path.insert(0, str(STANDIN))

from standin import DEFAULT_ARGS, boot  # noqa: E402

TEMPLATES = ["a photo of {}", "a close-up photo of {} smiling"]


def make_adapter(tmp_path, kind="sd1", args=DEFAULT_ARGS, **kwargs):
    host = boot(tmp_path / "webui", model=kind, args=args, settings=kwargs.pop("settings", None))
    from celebbasis_ext.hosts.a1111 import A1111Adapter

    return host, A1111Adapter(**kwargs)


def one_step(adapter, learned, templates=TEMPLATES):
    """encode -> predict -> backward, as the tuning loop does."""
    latents = adapter.encode_images(torch.rand(len(templates), 3, 64, 64) * 2 - 1)
    cond = adapter.encode_prompts(templates, learned)
    timesteps = torch.tensor([10, 500][: len(templates)], device=adapter.device)
    out = adapter.predict(latents, timesteps, cond)
    out.pow(2).mean().backward()
    return latents, cond, out


@pytest.mark.parametrize("kind, widths, prediction", [
    ("sd1", (32,), "epsilon"), ("sd2", (48,), "v_prediction"), ("sdxl", (32, 48), "epsilon")])
def test_each_family_one_step_shapes_gradients_and_state(tmp_path, kind, widths, prediction):
    host, adapter = make_adapter(tmp_path, kind)
    assert adapter.encoder_widths == widths and adapter.prediction_type == prediction
    assert adapter.export_keys == (("clip_l", "clip_g") if kind == "sdxl" else ("emb_params",))
    assert adapter.model_name == f"tiny-{kind}"
    assert adapter.tokenize("Tom Hanks") == [2435, 29943]
    assert adapter.alphas_cumprod().dtype == torch.float32 and adapter.alphas_cumprod().shape == (1000,)
    model = host.shared.sd_model
    before = state_digest(adapter.frozen_modules())
    unet_grad_flag = next(model.model.diffusion_model.parameters()).requires_grad
    learned = torch.randn(2, adapter.embedding_width, requires_grad=True)
    with adapter.tuning_session():
        assert not any(p.requires_grad for p in model.parameters())
        latents, cond, out = one_step(adapter, learned)
    assert latents.shape == (2, 4, 8, 8) and out.shape == (2, 4, 8, 8) and out.dtype == torch.float32
    assert cond["crossattn"].shape == (2, 77, sum(widths))
    # every text encoder's slice of the learned vectors receives a gradient
    offset = 0
    for width in widths:
        assert learned.grad[:, offset:offset + width].abs().sum() > 0
        offset += width
    assert state_digest(adapter.frozen_modules()) == before
    assert next(model.model.diffusion_model.parameters()).requires_grad == unet_grad_flag


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_conditioning_equals_the_hosts_own_textual_inversion(tmp_path, kind):
    """The same two vectors, loaded by the host's embedding database from a file and used in a
    txt2img prompt, give exactly the conditioning the adapter builds from the template."""
    from safetensors.torch import save_file

    host, adapter = make_adapter(tmp_path, kind)
    vectors = torch.randn(2, adapter.embedding_width) * 0.02
    folder = Path(host.shared.cmd_opts.embeddings_dir) / "celebbasis"
    folder.mkdir(parents=True)
    tensors = {"emb_params": vectors} if kind == "sd1" else {"clip_l": vectors[:, :32].contiguous(),
                                                              "clip_g": vectors[:, 32:].contiguous()}
    save_file(tensors, str(folder / "zqxperson.safetensors"))
    db = host.modules.sd_hijack.model_hijack.embedding_db
    db.load_textual_inversion_embeddings(force_reload=True)
    assert "zqxperson" in db.word_embeddings and db.word_embeddings["zqxperson"].vectors == 2

    reference = host.modules.processing.txt2img_conditioning(["a photo of zqxperson"], width=64, height=64)
    with torch.no_grad():
        cond = adapter.encode_prompts(["a photo of {}"], vectors)
    if kind == "sd1":
        torch.testing.assert_close(cond["crossattn"], reference, atol=1e-5, rtol=1e-4)
    else:
        torch.testing.assert_close(cond["crossattn"], reference["crossattn"], atol=1e-5, rtol=1e-4)
        vector = torch.cat([cond["pooled"], adapter._size_vector(1, 64, 64)], dim=1)
        torch.testing.assert_close(vector, reference["vector"], atol=1e-5, rtol=1e-4)


def test_learned_vectors_change_the_slots_and_what_follows_only(tmp_path):
    _, adapter = make_adapter(tmp_path, "sdxl")
    first, second = torch.randn(2, 2, adapter.embedding_width)
    with torch.no_grad():
        a = adapter.encode_prompts(["a photo of {}"], first)
        b = adapter.encode_prompts(["a photo of {}"], second)
    # start token + "a photo of" = positions 0..3 come before the slots (causal text encoders)
    assert torch.equal(a["crossattn"][:, :4], b["crossattn"][:, :4])
    assert not torch.allclose(a["crossattn"][:, 4:6], b["crossattn"][:, 4:6])
    assert not torch.allclose(a["pooled"], b["pooled"])
    # a batch of per-row vectors is the same as one row at a time
    batch = torch.stack([first, second])
    with torch.no_grad():
        both = adapter.encode_prompts(["a photo of {}"] * 2, batch)
    torch.testing.assert_close(both["crossattn"][1:], b["crossattn"])
    with pytest.raises(BadInput, match=r"learned vectors must be \(2, 80\) or \(2, 2, 80\), not \(2, 2, 7\)"):
        adapter.encode_prompts(TEMPLATES, torch.zeros(2, 7))
    with pytest.raises(BadInput, match="is longer than"):
        adapter.encode_prompts(["word " * 80 + "{}"], first)


def test_session_restores_everything_after_an_error_and_host_switches(tmp_path):
    host, adapter = make_adapter(tmp_path, "sd1")
    optimizations = host.modules.sd_hijack_optimizations
    assert optimizations.active == "Doggettx"
    before = state_digest(adapter.frozen_modules())
    adapter.gradient_checkpointing = True
    learned = torch.randn(2, adapter.embedding_width, requires_grad=True)
    with pytest.raises(RuntimeError, match="boom"):
        with adapter.tuning_session():
            assert optimizations.active is None  # the host's default: no optimisation while training
            assert host.modules.sd_hijack_checkpoint.stored
            one_step(adapter, learned)
            raise RuntimeError("boom")
    assert optimizations.active == "Doggettx"
    assert not host.modules.sd_hijack_checkpoint.stored
    assert state_digest(adapter.frozen_modules()) == before


def test_host_setting_keeps_attention_optimisation_while_training(tmp_path):
    host, adapter = make_adapter(tmp_path, "sd1", settings={"training_xattention_optimizations": True})
    with adapter.tuning_session():
        assert host.modules.sd_hijack_optimizations.active == "Doggettx"
    assert host.modules.sd_hijack_optimizations.active == "Doggettx"


def test_half_precision_weights_with_medvram(tmp_path):
    host, adapter = make_adapter(tmp_path, "sd1", args=["--use-cpu", "all", "--precision", "full",
                                                        "--no-half-vae", "--medvram"])
    model, lowvram = host.shared.sd_model, host.modules.lowvram
    assert adapter.dtype == torch.float16 and lowvram.is_enabled(model)
    swap_hooks = {name for name, module in model.named_modules() if module._forward_pre_hooks}
    assert swap_hooks == {"model", "first_stage_model", "cond_stage_model.wrapped.transformer"}
    in_gpu = lowvram.module_in_gpu
    before = state_digest(adapter.frozen_modules())
    learned = torch.randn(2, adapter.embedding_width, requires_grad=True)
    with adapter.tuning_session():
        # the host's swap hooks would move the text encoder off the GPU between forward and backward
        assert not any(module._forward_pre_hooks for module in model.modules())
        one_step(adapter, learned, TEMPLATES[:1])
        assert lowvram.module_in_gpu is model.first_stage_model  # only the VAE went through the host's swap
    assert learned.grad.dtype == torch.float32 and learned.grad.abs().sum() > 0
    assert lowvram.module_in_gpu is in_gpu
    assert state_digest(adapter.frozen_modules()) == before


def test_fp16_vae_overflow_falls_back_to_a_float32_copy(tmp_path, monkeypatch):
    host, adapter = make_adapter(tmp_path, "sd1", args=["--use-cpu", "all", "--precision", "full"])
    model = host.shared.sd_model
    assert next(model.first_stage_model.parameters()).dtype == torch.float16
    monkeypatch.setattr(model, "encode_first_stage", lambda x: torch.full((x.shape[0], 8, 8, 8), float("nan")))
    before = state_digest(adapter.frozen_modules())
    latents = adapter.encode_images(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()
    assert state_digest(adapter.frozen_modules()) == before


@pytest.mark.parametrize("kind, args, settings, message", [
    ("sd1", ["--no-half", "--use-cpu", "all", "--lowvram"], None, "--lowvram"),
    ("sd1-inpaint", DEFAULT_ARGS, None, "inpainting"),
    ("sdxl-refiner", DEFAULT_ARGS, None, "refiner"),
    ("sdxl", DEFAULT_ARGS, {"fp8_storage": "Enable for SDXL"}, "FP8"),
])
def test_unsupported_setups_are_refused_with_a_reason(tmp_path, kind, args, settings, message):
    boot(tmp_path / "webui", model=kind, args=args, settings=settings)
    from celebbasis_ext.hosts.a1111 import A1111Adapter

    with pytest.raises(UnsupportedModel, match=message):
        A1111Adapter()


def test_no_model_loaded_is_a_clear_error(tmp_path):
    host = boot(tmp_path / "webui", model=None)
    host.modules.sd_models.model_data.was_loaded_at_least_once = True  # a load that failed
    from celebbasis_ext.hosts.a1111 import A1111Adapter

    with pytest.raises(UnsupportedModel, match="no Stable Diffusion model"):
        A1111Adapter()


def test_module_imports_no_host_ldm_or_sgm_at_top_level():
    import celebbasis_ext.hosts.a1111 as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name.split(".")[0] for node in top for alias in node.names if isinstance(node, ast.Import)}
    names |= {(node.module or "").split(".")[0] for node in top if isinstance(node, ast.ImportFrom) and not node.level}
    assert not names & {"modules", "ldm", "sgm", "launch"}


def test_end_to_end_tune_writes_an_embedding_the_host_loads(tmp_path):
    from celebbasis_ext.pipeline import TuneRequest, tune_identity
    from celebbasis_ext.tuning import TuneOptions

    from helpers import noise_photo, small_names_file

    host, adapter = make_adapter(tmp_path, "sdxl", resolution=64)
    before = state_digest(adapter.frozen_modules())
    out_dir = Path(host.shared.cmd_opts.embeddings_dir) / "celebbasis"
    request = TuneRequest(
        photos=[noise_photo()], name="zqxperson", out_dir=out_dir, face_encoder="none",
        options=TuneOptions(steps=3, mode="direct", pool_size=4, resolution=64, report_every=1),
        names_file=str(small_names_file(tmp_path)), k=64, basis_cache_dir=str(tmp_path / "basis"),
    )
    outcome = tune_identity(adapter, request)
    assert outcome.path == out_dir / "zqxperson.safetensors" and outcome.path.is_file()
    assert state_digest(adapter.frozen_modules()) == before
    db = host.modules.sd_hijack.model_hijack.embedding_db
    db.load_textual_inversion_embeddings(force_reload=True)
    assert "zqxperson" not in db.skipped_embeddings
    embedding = db.word_embeddings["zqxperson"]
    assert embedding.shape == adapter.embedding_width and embedding.vectors == 2
    with_token = host.modules.processing.txt2img_conditioning(["a photo of zqxperson"], 64, 64)
    with torch.no_grad():
        ours = adapter.encode_prompts(["a photo of {}"], outcome.result.embedding)
    torch.testing.assert_close(with_token["crossattn"], ours["crossattn"], atol=1e-4, rtol=1e-3)
