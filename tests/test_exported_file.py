"""The written .safetensors changes rendering on its own, in loaders that are not ours.

A tiny model is tuned for a few steps; the file it writes is then loaded into a
FRESH pipeline with diffusers' own ``load_textual_inversion`` (SD1; SDXL with
its two calls) and into the A1111 stand-in's embedding database. The token
must change the render, and the render (or the conditioning) with the token
must equal what the file's vectors give when fed in by hand: into the token
embedding rows of a pipeline that never loaded the file.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from celebbasis_ext.diffusers_adapter import DiffusersAdapter
from celebbasis_ext.pipeline import TuneRequest, tune_identity
from celebbasis_ext.tuning import TuneOptions

from conftest import fresh_pipeline, tiny_pipeline
from helpers import noise_photo, small_names_file

NAME = "zqxann"  # not in the CLIP vocabulary: diffusers refuses known words
PROMPT = f"a photo of {NAME}"
SLOTS = slice(4, 6)  # <start> a photo of [slot] [slot] <end>


_FILES: dict = {}


def tuned_file(arch: str, tmp_path_factory) -> Path:
    """The file written by a 3-step tuning of the shared tiny model of ``arch`` (once per module run)."""
    if arch not in _FILES:
        folder = tmp_path_factory.mktemp(f"exported-{arch}")
        request = TuneRequest(
            photos=[noise_photo()], name=NAME, out_dir=folder / "out", face_encoder="none",
            options=TuneOptions(steps=3, mode="direct", pool_size=4, resolution=64, report_every=1),
            names_file=str(small_names_file(folder)), k=64, basis_cache_dir=str(folder / "basis"))
        _FILES[arch] = tune_identity(DiffusersAdapter(tiny_pipeline(arch), model_name=arch), request).path
    return _FILES[arch]


@pytest.fixture(scope="module", params=["tiny-sd1", "tiny-sdxl"])
def exported(request, tmp_path_factory):
    return request.param, tuned_file(request.param, tmp_path_factory)


def encoders(pipe):
    """(file key, tokenizer, text encoder) per text encoder, in the file's order."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return [("clip_l", pipe.tokenizer, pipe.text_encoder), ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2)]
    return [("emb_params", pipe.tokenizer, pipe.text_encoder)]


def load_with_diffusers(pipe, path: Path) -> None:
    """What a diffusers user does with the file: one call for SD1, one per text encoder for SDXL."""
    if getattr(pipe, "text_encoder_2", None) is None:
        pipe.load_textual_inversion(str(path), token=NAME)
        return
    tensors = load_file(str(path))
    pipe.load_textual_inversion(tensors["clip_l"], token=NAME, text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(tensors["clip_g"], token=NAME, text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)


def slot_ids(tokenizer) -> list:
    """``a photo of`` + two placeholder slots, with the start, end and padding the pipeline uses."""
    words = tokenizer("a photo of", add_special_tokens=False).input_ids
    ids = [tokenizer.bos_token_id, *words, 0, 0, tokenizer.eos_token_id]
    assert len(words) == 3
    return ids + [tokenizer.pad_token_id] * (tokenizer.model_max_length - len(ids))


def encode_by_hand(pipe, vectors: dict):
    """Prompt embeddings of ``a photo of <v1> <v2>``: the file's vectors written over the token embeddings
    of the two slots (a forward hook), then the text encoders as the pipeline runs them."""
    hidden, pooled = [], None
    for key, tokenizer, encoder in encoders(pipe):
        def write_slots(module, args, out, rows=vectors[key]):
            out = out.clone()
            out[:, SLOTS] = rows.to(out.dtype)
            return out

        handle = encoder.get_input_embeddings().register_forward_hook(write_slots)
        try:
            with torch.no_grad():
                out = encoder(torch.tensor([slot_ids(tokenizer)]), output_hidden_states=True)
        finally:
            handle.remove()
        if len(encoders(pipe)) == 1:
            hidden.append(out[0])  # SD1: the last layer, after the final layer norm
        else:
            hidden.append(out.hidden_states[-2])  # SDXL: the penultimate layer of both
            if out[0].ndim == 2:
                pooled = out[0]  # the second encoder's projected text embedding
    return torch.cat(hidden, dim=-1), pooled


def render(pipe, seed=5, **prompt):
    out = pipe(**prompt, num_inference_steps=2, height=64, width=64, generator=torch.Generator().manual_seed(seed),
               output_type="np")
    return out.images[0]


def test_diffusers_loads_the_file_and_the_token_alone_changes_the_render(exported):
    arch, path = exported
    vectors = load_file(str(path))
    pipe = fresh_pipeline(arch)
    load_with_diffusers(pipe, path)
    for key, tokenizer, encoder in encoders(pipe):
        ids = tokenizer.convert_tokens_to_ids([NAME, f"{NAME}_1"])
        assert torch.equal(encoder.get_input_embeddings().weight[ids].detach(), vectors[key])
        expanded = pipe.maybe_convert_prompt(PROMPT, tokenizer)
        assert tokenizer(expanded).input_ids[SLOTS] == ids  # the name fills exactly the two slots

    with_token = render(pipe, prompt=PROMPT)
    without = render(pipe, prompt="a photo of")
    assert with_token.shape == (64, 64, 3)
    assert np.abs(with_token - without).max() > 1e-3  # same seed: the token alone makes the difference
    assert np.array_equal(render(pipe, prompt=PROMPT), with_token)  # and it is deterministic

    untouched = fresh_pipeline(arch)  # never saw the file: the vectors go in by hand
    prompt_embeds, pooled = encode_by_hand(untouched, vectors)
    by_hand = render(untouched, prompt_embeds=prompt_embeds,
                     **({"pooled_prompt_embeds": pooled} if pooled is not None else {}))
    np.testing.assert_allclose(with_token, by_hand, atol=1e-5)
    other = {key: value.flip(0) for key, value in vectors.items()}  # the two vectors swapped
    prompt_embeds, pooled = encode_by_hand(untouched, other)
    swapped = render(untouched, prompt_embeds=prompt_embeds,
                     **({"pooled_prompt_embeds": pooled} if pooled is not None else {}))
    assert np.abs(swapped - with_token).max() > 1e-3  # the check can tell vectors apart


def boot_a1111(tmp_path, kind: str):
    standin = Path(__file__).resolve().parent / "host_standins" / "a1111"
    if str(standin) not in sys.path:
        sys.path.insert(0, str(standin))
    from standin import DEFAULT_ARGS, boot

    return boot(tmp_path / "webui", model=kind, args=DEFAULT_ARGS)


def give_final_norm_a_bias(host) -> None:
    """A real CLIP's last LayerNorm has a bias; the tiny one's is zero, so the conditioning's mean is ~0 and
    A1111's "Original" emphasis (which scales by mean / mean) can divide 0 by 0 for some vectors: all NaN."""
    norm = host.shared.sd_model.cond_stage_model.wrapped.transformer.text_model.final_layer_norm
    with torch.no_grad():
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=torch.Generator().manual_seed(0)) * 0.1)


def load_into_a1111(host, path: Path):
    """The file dropped into the host's embeddings folder and read by its own database."""
    folder = Path(host.shared.cmd_opts.embeddings_dir) / "celebbasis"
    folder.mkdir(parents=True)
    shutil.copy(path, folder / path.name)
    db = host.modules.sd_hijack.model_hijack.embedding_db
    db.load_textual_inversion_embeddings(force_reload=True)
    assert NAME not in db.skipped_embeddings
    return db.word_embeddings[NAME]


def test_a1111_loader_sd1_conditioning_equals_the_files_vectors_by_hand(tmp_path, tmp_path_factory):
    path = tuned_file("tiny-sd1", tmp_path_factory)
    vectors = load_file(str(path))["emb_params"]
    host = boot_a1111(tmp_path, "sd1")
    give_final_norm_a_bias(host)
    conditioning = host.modules.processing.txt2img_conditioning
    without = conditioning([PROMPT], 64, 64)  # before the file is there the name is only sub-words
    embedding = load_into_a1111(host, path)
    assert embedding.vectors == 2 and torch.equal(embedding.vec, vectors)
    with_token = conditioning([PROMPT], 64, 64)
    assert not torch.allclose(with_token, without)

    # by hand: the host's own CLIP, the file's vectors written over the slots' token embeddings
    clip = host.shared.sd_model.cond_stage_model.wrapped
    table = clip.transformer.text_model.embeddings.token_embedding.wrapped  # inside A1111's EmbeddingsWithFixes

    def write_slots(module, args, out):
        out = out.clone()
        out[:, SLOTS] = vectors.to(out.dtype)
        return out

    handle = table.register_forward_hook(write_slots)
    try:
        with torch.no_grad():
            by_hand = clip.transformer(input_ids=torch.tensor([slot_ids(clip.tokenizer)])).last_hidden_state
    finally:
        handle.remove()
    torch.testing.assert_close(with_token, by_hand, atol=1e-5, rtol=1e-4)


def test_a1111_loader_sdxl_each_tensor_reaches_its_text_encoder(tmp_path, tmp_path_factory):
    path = tuned_file("tiny-sdxl", tmp_path_factory)
    tensors = load_file(str(path))
    host = boot_a1111(tmp_path, "sdxl")
    conditioning = host.modules.processing.txt2img_conditioning
    embedding = load_into_a1111(host, path)
    assert embedding.vectors == 2 and set(embedding.vec) == {"clip_l", "clip_g"}
    assert all(torch.equal(embedding.vec[key], tensors[key]) for key in tensors)
    width_l = tensors["clip_l"].shape[1]
    base = conditioning([PROMPT], 64, 64)
    for key, changed in (("clip_l", slice(0, width_l)), ("clip_g", slice(width_l, None))):
        original = embedding.vec[key]
        embedding.vec[key] = original.flip(0)  # the file's two vectors swapped, in this encoder only
        try:
            other = conditioning([PROMPT], 64, 64)
        finally:
            embedding.vec[key] = original
        kept = slice(width_l, None) if key == "clip_l" else slice(0, width_l)
        assert not torch.allclose(other["crossattn"][..., changed], base["crossattn"][..., changed]), key
        torch.testing.assert_close(other["crossattn"][..., kept], base["crossattn"][..., kept])
        assert torch.allclose(other["vector"], base["vector"]) == (key == "clip_l"), key  # pooled: clip_g only
