"""generate.py: embeddings from a folder into tiny pipelines, prompts with several people, rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import checkpoints
from conftest import fresh_pipeline, tiny_pipeline
from celebbasis_ext.errors import BadInput
from celebbasis_ext.generate import expand_prompt, generate_image, load_embeddings_into

WIDTHS = {"tiny-sd1": [32], "tiny-sd2": [48], "tiny-sdxl": [32, 48]}


def write_embedding(folder, name, arch, seed, vectors=2, widths=None):
    generator = torch.Generator().manual_seed(seed)
    widths = widths or WIDTHS[arch]
    if arch == "tiny-sdxl":
        tensors = {"clip_l": torch.randn(vectors, widths[0], generator=generator),
                   "clip_g": torch.randn(vectors, widths[1], generator=generator)}
    else:
        tensors = {"emb_params": torch.randn(vectors, widths[0], generator=generator)}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{name}.safetensors"),
              metadata={"method": "celeb-basis", "name": name, "coefficients": "[0.1, 0.2]"})
    return tensors


def _encoders(pipe):
    if getattr(pipe, "text_encoder_2", None) is not None:
        return [("clip_l", pipe.tokenizer, pipe.text_encoder), ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2)]
    return [("emb_params", pipe.tokenizer, pipe.text_encoder)]


def _rows(tokenizer, encoder, name, count):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in [name] + [f"{name}_{i}" for i in range(1, count)]]
    return encoder.get_input_embeddings().weight[ids].detach()


@pytest.mark.parametrize("arch", ["tiny-sd1", "tiny-sd2", "tiny-sdxl"])
def test_two_people_in_one_prompt(tmp_path, arch):
    pipe = fresh_pipeline(arch)
    anna = write_embedding(tmp_path, "annacb", arch, seed=1)
    bob = write_embedding(tmp_path, "Bobcb", arch, seed=2)  # upper case in the file name
    (tmp_path / "notes.txt").write_text("not an embedding")
    assert load_embeddings_into(pipe, tmp_path) == ["annacb", "bobcb"]
    for key, tokenizer, encoder in _encoders(pipe):
        assert torch.equal(_rows(tokenizer, encoder, "annacb", 2), anna[key])
        assert torch.equal(_rows(tokenizer, encoder, "bobcb", 2), bob[key])

    prompt = "a photo of annacb and BOBCB at the beach"
    for _, tokenizer, _ in _encoders(pipe):
        expanded = pipe.maybe_convert_prompt(prompt, tokenizer)
        assert expanded == "a photo of annacb annacb_1 and bobcb bobcb_1 at the beach"  # any case finds it
        ids = tokenizer(expanded).input_ids
        for token in ("annacb", "annacb_1", "bobcb", "bobcb_1"):
            assert ids.count(tokenizer.convert_tokens_to_ids(token)) == 1

    image = generate_image(pipe, prompt, steps=2, seed=5)
    assert image.size == (64, 64) and image.mode == "RGB"
    again = generate_image(pipe, prompt, steps=2, seed=5)
    assert np.array_equal(np.asarray(image), np.asarray(again))
    other = generate_image(pipe, "a photo of annacb at the beach", steps=2, seed=5)
    assert not np.array_equal(np.asarray(image), np.asarray(other))


def test_second_vector_reaches_the_text_encoder(tmp_path):
    """Changing only vector 2 changes the encoding: the name expands to both tokens."""
    pipe = fresh_pipeline("tiny-sd1")
    tensors = write_embedding(tmp_path, "annacb", "tiny-sd1", seed=1)
    load_embeddings_into(pipe, tmp_path)
    before = pipe.encode_prompt("a photo of annacb", "cpu", 1, False)[0]
    tensors["emb_params"][1] += 1.0
    save_file(tensors, str(tmp_path / "annacb.safetensors"))
    assert load_embeddings_into(pipe, tmp_path) == ["annacb"]  # loading again replaces the vectors
    assert torch.equal(_rows(pipe.tokenizer, pipe.text_encoder, "annacb", 2), tensors["emb_params"])
    after = pipe.encode_prompt("a photo of annacb", "cpu", 1, False)[0]
    assert not torch.allclose(before, after)


def test_mismatched_and_unusable_files_are_skipped_with_warnings(tmp_path):
    sd1 = fresh_pipeline("tiny-sd1")
    write_embedding(tmp_path, "goodcb", "tiny-sd1", seed=1)
    write_embedding(tmp_path, "widecb", "tiny-sd1", seed=2, widths=[48])  # an SD2-sized file
    write_embedding(tmp_path, "xlcb", "tiny-sdxl", seed=3)  # an SDXL file
    write_embedding(tmp_path, "zoe", "tiny-sd1", seed=4)  # a vocabulary word
    write_embedding(tmp_path, "two words", "tiny-sd1", seed=5)
    checkpoints.write_lora(tmp_path / "style_lora.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 5)
    torch.save({"x": torch.zeros(1)}, str(tmp_path / "old.pt"))
    messages = []
    assert load_embeddings_into(sd1, tmp_path, warn=messages.append) == ["goodcb"]
    text = "\n".join(messages)
    assert len(messages) == 7, text
    assert "widecb.safetensors skipped: made for another model (emb_params has width 48, the model needs 32)" in text
    assert "xlcb.safetensors skipped: it is an SDXL embedding" in text
    assert "zoe.safetensors skipped: 'zoe' is already in the model's vocabulary" in text and "rename" in text
    assert "two words.safetensors skipped" in text
    assert "style_lora.safetensors skipped: it is not a Textual-Inversion embedding" in text
    assert "broken.safetensors skipped: it is not a valid .safetensors" in text
    assert "old.pt skipped: pickled" in text
    assert "zoe" not in sd1.tokenizer.added_tokens_encoder


def test_sd1_file_is_skipped_by_sdxl(tmp_path, caplog):
    pipe = fresh_pipeline("tiny-sdxl")
    write_embedding(tmp_path, "annacb", "tiny-sd1", seed=1)
    write_embedding(tmp_path, "narrowcb", "tiny-sdxl", seed=2, widths=[32, 40])
    with caplog.at_level("WARNING", logger="celebbasis_ext.generate"):
        assert load_embeddings_into(pipe, tmp_path) == []
    assert "annacb.safetensors skipped: it is an SD1/SD2-style embedding" in caplog.text
    assert "clip_g has width 40, the model needs 48" in caplog.text
    # nothing half-loaded into the first text encoder
    assert "narrowcb" not in pipe.tokenizer.added_tokens_encoder


def test_prefix_names_expand_correctly(tmp_path):
    pipe = fresh_pipeline("tiny-sd1")
    write_embedding(tmp_path, "anncb", "tiny-sd1", seed=1)
    write_embedding(tmp_path, "anncbx", "tiny-sd1", seed=2, vectors=3)
    assert load_embeddings_into(pipe, tmp_path) == ["anncb", "anncbx"]
    tokenizer = pipe.tokenizer
    assert expand_prompt("anncb and anncbx", tokenizer) == "anncb anncb_1 and anncbx anncbx_1 anncbx_2"
    once = expand_prompt("Anncb, anncbx.", tokenizer)
    assert expand_prompt(once, tokenizer) == once == "anncb anncb_1, anncbx anncbx_1 anncbx_2."
    assert expand_prompt("no names here", tokenizer) == "no names here"


def test_embeddings_in_a_single_file_sdxl_model(tmp_path):
    from celebbasis_ext.loading import load_pipeline

    model = checkpoints.write_single_file(tiny_pipeline("tiny-sdxl"), tmp_path / "xl.safetensors")
    pipe = load_pipeline(model, device="cpu")
    write_embedding(tmp_path / "emb", "annacb", "tiny-sdxl", seed=1)
    assert load_embeddings_into(pipe, tmp_path / "emb") == ["annacb"]
    image = generate_image(pipe, "annacb smiling", negative="blurry", steps=2, seed=1, width=64, height=48)
    assert image.size == (64, 48)


def test_generate_image_checks_its_options():
    pipe = tiny_pipeline("tiny-sd1")
    with pytest.raises(BadInput, match="multiple of 8"):
        generate_image(pipe, "x", steps=1, width=60)
    with pytest.raises(BadInput, match="steps"):
        generate_image(pipe, "x", steps=0)
    with pytest.raises(BadInput, match="embeddings folder"):
        load_embeddings_into(pipe, "/nonexistent/folder")
