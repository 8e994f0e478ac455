"""SD.Next: detection, tuning its loaded diffusers pipeline (through the engine's diffusers adapter),
refusals and the embedding reload, on the stand-in host in tests/host_standins/sdnext."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from celebbasis_ext.errors import UnsupportedModel
from celebbasis_ext.hosts.detect import HostKind, adapter_for_loaded_model, detect_host
from celebbasis_ext.hosts.reload import embeddings_dir, reload_embeddings
from celebbasis_ext.hosts.sdnext import SDNextAdapter
from celebbasis_ext.model_guard import state_digest
from celebbasis_ext.pipeline import TuneRequest, tune_identity
from celebbasis_ext.tuning import TuneOptions

from helpers import noise_photo, small_names_file

STANDIN_FILE = Path(__file__).resolve().parent / "host_standins" / "sdnext" / "standin.py"
NAME = "zqxperson"


def _tune(adapter, tmp_path, seed=23, overwrite=False, name=NAME):
    request = TuneRequest(
        photos=[noise_photo(seed)], name=name, out_dir=embeddings_dir() / "celebbasis", face_encoder="none",
        options=TuneOptions(steps=2, mode="direct", pool_size=2, resolution=64, report_every=1, seed=seed),
        names_file=str(small_names_file(tmp_path)), k=32, basis_cache_dir=str(tmp_path / "basis"), overwrite=overwrite,
    )
    return tune_identity(adapter, request)


def _assert_host_uses(host, adapter, embedding, name=NAME):
    prompt_embeds, pooled = host.prompt_parser_diffusers.encode_prompt(f"a photo of {name}")
    with torch.no_grad():
        ours = adapter.encode_prompts(["a photo of {}"], embedding)
    torch.testing.assert_close(prompt_embeds, ours["context"], atol=1e-5, rtol=1e-4)
    assert (pooled is None) == (ours["pooled"] is None)  # SDXL has one, SD1 none
    if pooled is not None:
        torch.testing.assert_close(pooled, ours["pooled"], atol=1e-5, rtol=1e-4)
    assert host.shared.sd_model.embedding_db.embeddings_used == [name]


@pytest.mark.parametrize("checkpoint, inference_weights",
                         [("tiny-sd1", False), ("tiny-sdxl", False), ("tiny-sd1", True)])
def test_tune_leaves_the_pipeline_as_it_was_and_the_token_works_at_once(sdnext, tmp_path, monkeypatch, checkpoint,
                                                                       inference_weights):
    host = sdnext.boot(tmp_path / "sdnext", checkpoint=checkpoint, load=False)
    if inference_weights:  # SD.Next's option "Inference mode: inference-mode": loading and embeddings under it
        monkeypatch.setattr(host.devices, "inference_context", torch.inference_mode)
        build = host.sd_models.reload_model_weights
        monkeypatch.setattr(host.sd_models, "reload_model_weights",
                            lambda *a, **k: torch.inference_mode()(build)(*a, **k))
    info = detect_host()
    assert info.kind == HostKind.SDNEXT and info.label == "SD.Next"
    assert embeddings_dir() == tmp_path / "sdnext" / "models" / "embeddings"
    adapter = adapter_for_loaded_model()  # SD.Next loads the selected checkpoint on access
    pipe = host.shared.sd_model
    assert isinstance(adapter, SDNextAdapter) and adapter.pipe is pipe and adapter.model_name == checkpoint
    hook = pipe.offload_hook
    assert pipe.unet._hf_hook is hook
    fingerprint = adapter.fingerprint()
    before = state_digest(adapter.frozen_modules())
    identity = [(id(p), p.is_inference()) for m in adapter.frozen_modules() for p in m.parameters()]
    calls = hook.calls

    outcome = _tune(adapter, tmp_path)

    assert hook.calls == calls  # the offload hooks were suspended while tuning ...
    assert all(c._hf_hook is hook for c in (pipe.unet, pipe.text_encoder, pipe.vae))  # ... and are back
    assert state_digest(adapter.frozen_modules()) == before
    assert [(id(p), p.is_inference()) for m in adapter.frozen_modules() for p in m.parameters()] == identity
    assert any(flag for _, flag in identity) == inference_weights

    assert reload_embeddings(detect_host()) == ["embedding_db"]
    assert NAME in pipe.embedding_db.word_embeddings and not pipe.embedding_db.skipped_embeddings
    _assert_host_uses(host, adapter, outcome.result.embedding)
    # SD.Next appended the token rows to the tables: the basis and fingerprint only see the base vocabulary
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] > 49408
    assert adapter.fingerprint() == fingerprint and not adapter.is_single_token_word(NAME)


def test_retraining_a_name_takes_effect_at_once(sdnext, tmp_path):
    host = sdnext.boot(tmp_path / "sdnext", checkpoint="tiny-sdxl")
    adapter = adapter_for_loaded_model()
    _tune(adapter, tmp_path, seed=1)
    reload_embeddings()
    old, _ = host.prompt_parser_diffusers.encode_prompt(f"a photo of {NAME}")
    second = _tune(adapter, tmp_path, seed=2, overwrite=True)
    stale, _ = host.prompt_parser_diffusers.encode_prompt(f"a photo of {NAME}")
    assert torch.equal(stale, old)  # the prompt cache a host without the reload would use
    reload_embeddings()
    _assert_host_uses(host, adapter, second.result.embedding)


@pytest.mark.parametrize("checkpoint, inference_weights", [("tiny-sdxl", False), ("tiny-sd1", True)])
def test_a_deleted_name_stops_working_and_the_others_keep_theirs(sdnext, tmp_path, monkeypatch, checkpoint,
                                                                  inference_weights):
    """SD.Next's reload adds tokens but never removes them, and prompts find embeddings by those tokens."""
    host = sdnext.boot(tmp_path / "sdnext", checkpoint=checkpoint)
    if inference_weights:  # SD.Next's option "Inference mode: inference-mode": embedding rows written under it
        monkeypatch.setattr(host.devices, "inference_context", torch.inference_mode)
    adapter = adapter_for_loaded_model()
    pipe = host.shared.sd_model
    rows = [encoder.get_input_embeddings().weight.shape[0] for encoder in adapter.encoders]
    flags = [encoder.get_input_embeddings().weight.requires_grad for encoder in adapter.encoders]
    unknown, unknown_pooled = host.prompt_parser_diffusers.encode_prompt(f"a photo of {NAME}")
    first = _tune(adapter, tmp_path, seed=1)
    kept = _tune(adapter, tmp_path, seed=2, name="zqxother")
    reload_embeddings()
    _assert_host_uses(host, adapter, first.result.embedding)

    first.path.unlink()
    assert reload_embeddings(removed=[NAME]) == ["embedding_db"]

    stale, stale_pooled = host.prompt_parser_diffusers.encode_prompt(f"a photo of {NAME}")
    assert pipe.embedding_db.embeddings_used == []
    torch.testing.assert_close(stale, unknown)
    assert (stale_pooled is None) == (unknown_pooled is None)
    if stale_pooled is not None:
        torch.testing.assert_close(stale_pooled, unknown_pooled)
    assert all(NAME not in tokenizer.added_tokens_encoder for tokenizer in adapter.tokenizers)
    assert [encoder.get_input_embeddings().weight.shape[0] for encoder in adapter.encoders] == [r + 2 for r in rows]
    assert [encoder.get_input_embeddings().weight.requires_grad for encoder in adapter.encoders] == flags
    _assert_host_uses(host, adapter, kept.result.embedding, name="zqxother")  # its rows moved, still right
    assert reload_embeddings(removed=["never_there"]) == ["embedding_db"]


@pytest.mark.parametrize("checkpoint, offload, message", [
    ("flux", "balanced", "Flux models cannot be tuned"),
    ("tiny-sdxl-refiner", "balanced", "refiner"),
    ("tiny-sd1-inpaint", "balanced", "inpainting"),
    ("tiny-sd1", "sequential", "sequential offload"),
    ("tiny-sd1", "fp8", "quantized"),
])
def test_unsupported_models_get_a_one_line_reason(sdnext, tmp_path, checkpoint, offload, message):
    host = sdnext.boot(tmp_path / "sdnext", checkpoint=checkpoint, offload="none" if offload == "fp8" else offload)
    if offload == "fp8":
        host.shared.sd_model.unet.to(torch.float8_e4m3fn)
    with pytest.raises(UnsupportedModel, match=message) as info:
        adapter = adapter_for_loaded_model()
        with adapter.tuning_session():
            pass
    assert "\n" not in str(info.value)


def test_nothing_loaded(sdnext, tmp_path):
    sdnext.boot(tmp_path / "sdnext", checkpoint="None", load=False)
    assert reload_embeddings() == []
    with pytest.raises(UnsupportedModel, match="no Stable Diffusion model is loaded"):
        adapter_for_loaded_model()
