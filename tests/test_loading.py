"""celebbasis_ext.loading: tiny models from diffusers folders and original-layout single files, offline."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoints
from conftest import tiny_pipeline
from celebbasis_ext.errors import BadInput, ModelFilesMissing, UnsupportedModel
from celebbasis_ext.loading import describe_model, load_pipeline, resolve_device, resolve_dtype

ARCHS = ["tiny-sd1", "tiny-sd2", "tiny-sdxl"]
FAMILY = {"tiny-sd1": "sd1", "tiny-sd2": "sd2", "tiny-sdxl": "sdxl"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Each tiny family written as a diffusers folder and as a single file."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for arch in ARCHS:
        pipe = tiny_pipeline(arch)
        out[arch] = {
            "folder": checkpoints.write_diffusers_folder(pipe, root / arch),
            "file": checkpoints.write_single_file(pipe, root / f"{arch}.safetensors"),
        }
    return out


def _copy(source: Path, target: Path) -> Path:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def _components(pipe):
    return [name for name in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None]


def _render(pipe, prompt="a photo of a person", seed=3):
    generator = torch.Generator().manual_seed(seed)
    image = pipe(prompt, num_inference_steps=2, guidance_scale=5.0, generator=generator, output_type="np").images[0]
    return np.asarray(image)


@pytest.mark.parametrize("arch", ARCHS)
def test_single_file_loads_the_same_model_as_the_folder(models, arch):
    original = tiny_pipeline(arch)
    from_file = load_pipeline(models[arch]["file"], device="cpu", dtype="auto")
    from_folder = load_pipeline(models[arch]["folder"], device="cpu", dtype="auto")
    assert type(from_file) is type(from_folder) is type(original)
    for name in _components(original):
        expected = getattr(original, name).state_dict()
        for loaded in (from_file, from_folder):
            state = getattr(loaded, name).state_dict()
            assert state.keys() == expected.keys(), name
            for key, value in expected.items():
                assert torch.equal(state[key], value), f"{name}.{key}"
            assert getattr(loaded, name).dtype == torch.float32
    assert from_file.scheduler.config.prediction_type == original.scheduler.config.prediction_type
    for loaded in (from_file, from_folder):
        assert loaded.tokenizer("Tom Hanks").input_ids == original.tokenizer("Tom Hanks").input_ids
        assert loaded.tokenizer.pad_token == original.tokenizer.pad_token
        assert loaded.tokenizer.model_max_length == 77
    if arch == "tiny-sdxl":
        assert from_file.tokenizer_2.pad_token == "!"
    # Same weights bit for bit; the rendering may differ in the last float bit because a weight's
    # memory alignment (a transposed copy vs a mapped file) picks a different CPU kernel.
    np.testing.assert_allclose(_render(from_file), _render(from_folder), rtol=0, atol=1e-5)

    info = describe_model(from_file)
    assert info["family"] == FAMILY[arch] and info["architecture"] == arch and info["resolution"] == 64
    assert info["source"] == "single_file" and info["name"] == arch
    assert describe_model(from_folder)["family"] == FAMILY[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_describe_model_reads_no_weights(models, arch):
    expected_prediction = "v_prediction" if arch == "tiny-sd2" else "epsilon"
    for source in ("file", "folder"):
        info = describe_model(models[arch][source])
        assert info["family"] == FAMILY[arch]
        assert info["prediction_type"] == expected_prediction
        assert info["resolution"] == 64
        assert info["name"] == arch
    assert describe_model(models[arch]["file"])["architecture"] == arch


def test_sd2_prediction_type_from_argument_yaml_and_file_name(models, tmp_path):
    source = models["tiny-sd2"]["file"]
    info = describe_model(source)
    assert (info["prediction_type"], info["prediction_type_source"]) == ("v_prediction", "default")
    base = _copy(source, tmp_path / "my-sd21-512-base.safetensors")
    assert describe_model(base)["prediction_type"] == "epsilon"
    assert describe_model(base)["prediction_type_source"] == "filename"
    v = _copy(source, tmp_path / "tuned_768-v-ema.safetensors")
    assert describe_model(v)["prediction_type"] == "v_prediction"
    assert describe_model(v, prediction_type="epsilon")["prediction_type"] == "epsilon"
    with_yaml = _copy(source, tmp_path / "finetune-512.safetensors")
    (tmp_path / "finetune-512.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert describe_model(with_yaml)["prediction_type"] == "v_prediction"
    assert describe_model(with_yaml)["prediction_type_source"] == "yaml"

    pipe = load_pipeline(base, device="cpu")
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert describe_model(pipe)["prediction_type"] == "epsilon"
    pipe = load_pipeline(models["tiny-sd2"]["folder"], device="cpu", prediction_type="epsilon")
    assert pipe.scheduler.config.prediction_type == "epsilon"
    with pytest.raises(BadInput, match="prediction type"):
        describe_model(source, prediction_type="x0")


def test_sdxl_v_pred_marker_keys(models, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(models["tiny-sdxl"]["file"]))
    state.update(v_pred=torch.zeros(0), ztsnr=torch.zeros(0))
    path = tmp_path / "xl-vpred.safetensors"
    save_file(state, str(path))
    info = describe_model(path)
    assert (info["prediction_type"], info["prediction_type_source"]) == ("v_prediction", "key")
    pipe = load_pipeline(path, device="cpu")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr is True


def test_fp16_checkpoint_loads_in_fp32(models, tmp_path):
    """Checkpoints are usually shared in fp16; on CPU they are computed in fp32."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(models["tiny-sd1"]["file"]))
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    path = tmp_path / "half.safetensors"
    save_file(state, str(path))
    pipe = load_pipeline(path, device="cpu")
    assert pipe.unet.dtype == torch.float32
    original = tiny_pipeline("tiny-sd1")
    for key, value in original.unet.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[key], value.half().float()), key


def test_describe_a_pipeline_built_in_memory():
    info = describe_model(tiny_pipeline("tiny-sd2"))
    assert (info["family"], info["prediction_type"], info["resolution"]) == ("sd2", "v_prediction", 64)
    assert describe_model(tiny_pipeline("tiny-sdxl"))["text_encoder_widths"] == [32, 48]


def test_explicit_architecture(models):
    path = models["tiny-sd1"]["file"]
    pipe = load_pipeline(path, device="cpu", architecture="tiny-sd1")
    assert describe_model(pipe)["architecture"] == "tiny-sd1"
    with pytest.raises(UnsupportedModel, match="does not have the sizes of sd15"):
        load_pipeline(path, device="cpu", architecture="sd15")
    with pytest.raises(BadInput, match="SD1 checkpoint, not tiny-sdxl"):
        load_pipeline(path, device="cpu", architecture="tiny-sdxl")
    with pytest.raises(BadInput, match="unknown architecture"):
        load_pipeline(path, device="cpu", architecture="sd9")


def test_config_folder_is_cached_and_offline(models, isolated_cache):
    from celebbasis_ext.loading import config_folder_for, inspect_model

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    load_pipeline(models["tiny-sd1"]["file"], device="cpu")
    folder = config_folder_for(inspect_model(models["tiny-sd1"]["file"]))
    assert folder.parent == isolated_cache / "diffusers_configs"
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    load_pipeline(models["tiny-sd1"]["file"], device="cpu")
    assert config_folder_for(inspect_model(models["tiny-sd1"]["file"])) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert sorted(p.name for p in folder.iterdir()) == [
        "model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]
    assert not list(folder.rglob("*.safetensors"))  # configs only, never weights
    assert not list((isolated_cache / "diffusers_configs").glob(".staging-*"))


def test_dtype_and_device_options(models, monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("fp16", torch.device("cpu")) == torch.float16
    pipe = load_pipeline(models["tiny-sd1"]["file"], device="cpu", dtype="bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    with pytest.raises(BadInput, match="unknown dtype"):
        load_pipeline(models["tiny-sd1"]["file"], device="cpu", dtype="int8")
    with pytest.raises(BadInput, match="unknown device"):
        load_pipeline(models["tiny-sd1"]["file"], device="tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the message, on any machine
    with pytest.raises(BadInput, match="no CUDA GPU"):
        load_pipeline(models["tiny-sd1"]["file"], device="cuda")


# ----------------------------------------------------------------------------- refusals
def _refusal(models, tmp_path, kind):
    sd1, xl = tiny_pipeline("tiny-sd1"), tiny_pipeline("tiny-sdxl")
    if kind == "missing":
        return tmp_path / "nope.safetensors", BadInput, "model not found"
    if kind == "ckpt":
        return checkpoints.write_pickle(tmp_path / "model.ckpt"), BadInput, \
            "convert it to .safetensors: pickled checkpoints are never loaded"
    if kind == "bin":
        path = checkpoints.write_pickle(tmp_path / "pytorch_model.bin")
        return path, BadInput, "pickled checkpoints are never loaded"
    if kind == "lora":
        return checkpoints.write_lora(tmp_path / "face_lora.safetensors"), BadInput, "LoRA"
    if kind == "random":
        path = checkpoints.write_random_tensors(tmp_path / "r.safetensors")
        return path, BadInput, "not a Stable Diffusion checkpoint"
    if kind == "truncated":
        path = checkpoints.write_truncated(models["tiny-sd1"]["file"], tmp_path / "half.safetensors")
        return path, BadInput, "truncated"
    if kind == "garbage":
        path = tmp_path / "garbage.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(64))
        return path, BadInput, "not a valid .safetensors"
    if kind == "empty":
        path = tmp_path / "empty.safetensors"
        path.write_bytes(b"")
        return path, BadInput, "not a valid .safetensors"
    if kind == "inpainting":
        return checkpoints.write_inpainting(sd1, tmp_path / "inpaint.safetensors"), UnsupportedModel, "inpainting"
    if kind == "refiner":
        return checkpoints.write_sdxl_refiner(xl, tmp_path / "refiner.safetensors"), UnsupportedModel, "refiner"
    if kind == "embedding":
        from safetensors.torch import save_file

        path = tmp_path / "someone.safetensors"
        save_file({"emb_params": torch.zeros(2, 32)}, str(path))
        return path, BadInput, "Textual-Inversion embedding"
    if kind == "other_suffix":
        path = tmp_path / "model.gguf"
        path.write_bytes(b"GGUF")
        return path, BadInput, "diffusers folder or a .safetensors"
    if kind == "plain_folder":
        (tmp_path / "stuff").mkdir()
        return tmp_path / "stuff", BadInput, "no model_index.json"
    if kind in ("folder_inpainting", "folder_refiner", "folder_flux"):
        folder = shutil.copytree(models["tiny-sdxl" if kind == "folder_refiner" else "tiny-sd1"]["folder"],
                                 tmp_path / kind)
        if kind == "folder_inpainting":
            config = json.loads((folder / "unet" / "config.json").read_text())
            config["in_channels"] = 9
            (folder / "unet" / "config.json").write_text(json.dumps(config))
            return folder, UnsupportedModel, "inpainting"
        index = json.loads((folder / "model_index.json").read_text())
        if kind == "folder_refiner":
            index["_class_name"] = "StableDiffusionXLImg2ImgPipeline"
            index["text_encoder"] = [None, None]
            (folder / "model_index.json").write_text(json.dumps(index))
            return folder, UnsupportedModel, "refiner"
        index["_class_name"] = "FluxPipeline"
        (folder / "model_index.json").write_text(json.dumps(index))
        return folder, UnsupportedModel, "FluxPipeline"
    if kind == "folder_without_weights":
        folder = shutil.copytree(models["tiny-sd1"]["folder"], tmp_path / kind)
        for weights in (folder / "unet").glob("*.safetensors"):
            weights.unlink()
        return folder, ModelFilesMissing, "not in .safetensors form"
    if kind == "edm":
        from safetensors.torch import load_file, save_file

        state = load_file(str(models["tiny-sdxl"]["file"]))
        state["edm_mean"] = torch.zeros(4)
        save_file(state, str(tmp_path / "playground.safetensors"))
        return tmp_path / "playground.safetensors", UnsupportedModel, "EDM"
    raise AssertionError(kind)


REFUSALS = ["missing", "ckpt", "bin", "lora", "random", "truncated", "garbage", "empty", "inpainting", "refiner",
            "embedding", "other_suffix", "plain_folder", "folder_inpainting", "folder_refiner", "folder_flux",
            "folder_without_weights", "edm"]


@pytest.mark.parametrize("kind", REFUSALS)
def test_refusals_are_one_line_messages(models, tmp_path, kind):
    path, error_type, text = _refusal(models, tmp_path, kind)
    with pytest.raises(error_type) as caught:
        load_pipeline(path, device="cpu")
    message = str(caught.value)
    assert text in message
    assert "\n" not in message and len(message) < 400
    if kind != "folder_without_weights":  # describe_model reads configs and headers, not weights
        with pytest.raises(error_type):
            describe_model(path)


def test_weights_diffusers_did_not_convert_are_caught(models, tmp_path, monkeypatch):
    """diffusers loads with strict=False: a block its converter skips must not stay random."""
    from diffusers.loaders import single_file_model

    entry = dict(single_file_model.SINGLE_FILE_LOADABLE_CLASSES["UNet2DConditionModel"])
    convert = entry["checkpoint_mapping_fn"]

    def forgetful(checkpoint, config, **kwargs):
        converted = convert(checkpoint=checkpoint, config=config, **kwargs)
        return {k: v for k, v in converted.items() if not k.startswith("mid_block.attentions.")}

    entry["checkpoint_mapping_fn"] = forgetful
    monkeypatch.setitem(single_file_model.SINGLE_FILE_LOADABLE_CLASSES, "UNet2DConditionModel", entry)
    # older diffusers load it and the check finds the random block; newer ones fail on the empty (meta) weights
    with pytest.raises(UnsupportedModel, match="UNet middle attention weights did not load|weights were not loaded"):
        load_pipeline(models["tiny-sd1"]["file"], device="cpu")


def test_checkpoint_missing_a_block_is_refused(models, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(models["tiny-sd1"]["file"]))
    prefix = "model.diffusion_model.middle_block.1."
    state = {(k.replace(prefix, "model.diffusion_model.middle_block.7.") if k.startswith(prefix) else k): v
             for k, v in state.items()}
    path = tmp_path / "odd.safetensors"
    save_file(state, str(path))
    with pytest.raises(UnsupportedModel, match="not a complete checkpoint"):
        load_pipeline(path, device="cpu")


# ----------------------------------------------------------------------------- real sizes
@pytest.mark.parametrize("name,family,resolution", [("sd15", "sd1", 512), ("sd21", "sd2", 768), ("sdxl", "sdxl", 1024)])
def test_real_size_checkpoints_are_recognised_and_fully_converted(name, family, resolution, tmp_path):
    """SD1.5/SD2.1/SDXL key layouts (built on the meta device: no memory, no download) are
    recognised, and diffusers' converter, given the config folder we write, fills every weight."""
    from diffusers.loaders import single_file_utils as sfu

    from celebbasis_ext.adapter import ModelFamily
    from celebbasis_ext.loading import ModelInfo, config_folder_for
    from celebbasis_ext.loading.recognise import decide_prediction, detect_family, match_architecture

    models = checkpoints.meta_models(name)
    state = checkpoints.pipeline_to_ldm(models)
    header = checkpoints.header_of(state)
    found = detect_family(header, f"{name}.safetensors")
    assert found == ModelFamily(family)
    assert match_architecture(header, found, None, f"{name}.safetensors") == name
    prediction, _ = decide_prediction(tmp_path / f"{name}.safetensors", found, header, None)
    info = ModelInfo(str(tmp_path / f"{name}.safetensors"), "single_file", found, name, prediction,
                     "default", resolution)
    folder = config_folder_for(info)

    def same_shapes(converted, model):
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids")}
        got = {k: tuple(v.shape) for k, v in converted.items() if not k.endswith("position_ids")}
        assert got == expected

    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    assert unet_config["sample_size"] * 8 == resolution
    same_shapes(sfu.convert_ldm_unet_checkpoint(state, unet_config), models.unet)
    same_shapes(sfu.convert_ldm_vae_checkpoint(state, json.loads((folder / "vae" / "config.json").read_text())),
                models.vae)

    def flat(converted, model):  # transformers 5.6+ flattened CLIPTextModel (no "text_model." prefix)
        if hasattr(model, "text_model"):
            return converted
        return {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in converted.items()}

    if family == "sd1":
        same_shapes(flat(sfu.convert_ldm_clip_checkpoint(state), models.text_encoder), models.text_encoder)
    elif family == "sd2":
        converted = sfu.convert_open_clip_checkpoint(models.text_encoder, state, prefix="cond_stage_model.model.")
        same_shapes(flat(converted, models.text_encoder), models.text_encoder)
    else:
        clip_l = {k: v for k, v in state.items() if not k.startswith("conditioner.embedders.1.")}
        same_shapes(flat(sfu.convert_ldm_clip_checkpoint(clip_l), models.text_encoder), models.text_encoder)
        converted = sfu.convert_open_clip_checkpoint(models.text_encoder_2, state,
                                                     prefix="conditioner.embedders.1.model.")
        same_shapes(flat(converted, models.text_encoder_2), models.text_encoder_2)
