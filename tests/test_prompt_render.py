"""Prompts that use embeddings on a pipeline that is also tuned: the standalone UI's render box.

``embeddings_for_prompts`` must render exactly what ``load_embeddings_into`` (the ``generate`` command)
renders, and leave the model as it was: same token tables (fingerprint, basis cache), same tokenizers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from celebbasis_ext.adapter import fingerprint_tables
from celebbasis_ext.architectures import build_pipeline
from celebbasis_ext.errors import BadInput
from celebbasis_ext.generate import embeddings_for_prompts, generate_image, load_embeddings_into
from test_generate import fresh_pipeline, write_embedding


def _tables(pipe):
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) else [])
    return [encoder.get_input_embeddings().weight for encoder in encoders]


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("arch", ["tiny-sd1", "tiny-sdxl"])
def test_renders_like_generate_and_leaves_the_model_as_it_was(tmp_path, arch):
    write_embedding(tmp_path, "annacb", arch, seed=1)
    write_embedding(tmp_path, "bobcb", arch, seed=2)
    prompt = "a photo of AnnaCB and bobcb at the beach"

    loaded = fresh_pipeline(arch)
    assert load_embeddings_into(loaded, tmp_path) == ["annacb", "bobcb"]
    expected = generate_image(loaded, prompt, steps=2, seed=3)

    pipe = build_pipeline(arch, seed=0)
    tokenizers = [pipe.tokenizer, getattr(pipe, "tokenizer_2", None)]
    before = fingerprint_tables(_tables(pipe))
    sizes = [len(t) for t in tokenizers if t is not None]
    plain = generate_image(pipe, prompt, steps=2, seed=3)
    with embeddings_for_prompts(pipe, tmp_path) as names:
        assert names == ["annacb", "bobcb"]
        image = generate_image(pipe, prompt, steps=2, seed=3)
    assert np.array_equal(_pixels(image), _pixels(expected))  # the same rows as loaded embeddings
    assert np.abs(_pixels(image) - _pixels(plain)).max() > 0  # the token changes the render
    assert fingerprint_tables(_tables(pipe)) == before
    assert [pipe.tokenizer, getattr(pipe, "tokenizer_2", None)] == tokenizers
    assert [len(t) for t in tokenizers if t is not None] == sizes
    assert np.array_equal(_pixels(generate_image(pipe, prompt, steps=2, seed=3)), _pixels(plain))


def test_restores_the_model_when_rendering_fails(tmp_path):
    write_embedding(tmp_path, "annacb", "tiny-sd1", seed=1)
    pipe = build_pipeline("tiny-sd1", seed=0)
    tokenizer = pipe.tokenizer
    embedding = pipe.text_encoder.get_input_embeddings()
    with pytest.raises(BadInput, match="steps must be between"):
        with embeddings_for_prompts(pipe, tmp_path):
            generate_image(pipe, "annacb", steps=0)
    assert pipe.tokenizer is tokenizer
    assert not embedding._forward_hooks and not embedding._forward_pre_hooks


def test_unusable_files_are_skipped_with_a_reason(tmp_path):
    write_embedding(tmp_path, "annacb", "tiny-sd1", seed=1)
    write_embedding(tmp_path, "photo", "tiny-sd1", seed=2)  # a word the model knows
    write_embedding(tmp_path, "wide", "tiny-sd1", seed=3, widths=[48])  # another family's width
    (tmp_path / "old.pt").write_bytes(b"pickle")
    pipe = build_pipeline("tiny-sd1", seed=0)
    warnings = []
    with embeddings_for_prompts(pipe, tmp_path, warn=warnings.append) as names:
        assert names == ["annacb"]
    text = " | ".join(warnings)
    assert "photo.safetensors skipped" in text and "vocabulary" in text
    assert "wide.safetensors skipped: made for another model" in text
    assert "old.pt skipped: pickled files are never loaded" in text
    with pytest.raises(BadInput, match="no such embeddings folder"):
        with embeddings_for_prompts(pipe, tmp_path / "absent"):
            pass


def test_the_vectors_reach_the_text_encoder(tmp_path):
    vectors = write_embedding(tmp_path, "annacb", "tiny-sd1", seed=4)["emb_params"]
    pipe = build_pipeline("tiny-sd1", seed=0)
    seen = []
    embedding = pipe.text_encoder.get_input_embeddings()
    with embeddings_for_prompts(pipe, tmp_path):
        handle = embedding.register_forward_hook(lambda module, args, out: seen.append(out))  # runs after ours
        try:
            ids = pipe.tokenizer(pipe.maybe_convert_prompt("annacb", pipe.tokenizer), return_tensors="pt").input_ids
            pipe.text_encoder(ids)
        finally:
            handle.remove()
    assert ids[0, 1:3].tolist() == [len(pipe.tokenizer), len(pipe.tokenizer) + 1]  # two new ids past the vocabulary
    assert torch.equal(seen[0][0, 1:3], vectors)
    assert torch.equal(seen[0][0, 0], embedding.weight[ids[0, 0]])  # other rows as before


def test_standalone_prompt_box(tmp_path):
    """The standalone UI's Render: the token from the output folder, clear refusals, the model unchanged."""
    from celebbasis_ext.standalone_ui import PromptRender, create_service

    pipe = build_pipeline("tiny-sd1", seed=0)
    service = create_service(pipe, tmp_path / "embeddings")
    render = PromptRender(pipe, service)
    image, used, warnings = render("a photo of annacb", seed=1, steps=2)  # no folder yet: renders, no token
    assert image.size == (64, 64) and used == [] and warnings == []
    write_embedding(tmp_path / "embeddings", "annacb", "tiny-sd1", seed=1)
    before = fingerprint_tables(_tables(pipe))
    with_token, used, _ = render("a photo of AnnaCB", seed=1, steps=2)
    assert used == ["annacb"]
    assert np.abs(_pixels(with_token) - _pixels(image)).max() > 0
    assert fingerprint_tables(_tables(pipe)) == before
    with pytest.raises(BadInput, match="type a prompt that uses your token"):
        render("   ")
    with service.lock:
        with pytest.raises(BadInput, match="busy"):
            render("a photo of annacb")
    assert not service.lock.locked()
