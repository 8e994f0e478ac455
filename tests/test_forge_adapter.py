"""Forge (lllyasviel main) and Forge Neo: detection, the Forge adapter, refusals and embedding reload,
on the stand-in host in tests/host_standins/forge (tiny SD1 and SDXL engines whose weights are created
under torch.inference_mode as Forge's loader creates them)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from celebbasis_ext.errors import UnsupportedModel
from celebbasis_ext.hosts.detect import HostKind, adapter_for_loaded_model, detect_host
from celebbasis_ext.hosts.forge import ForgeAdapter, TrainableAliases, recompute_manual_casts
from celebbasis_ext.hosts.reload import embeddings_dir, reload_embeddings
from celebbasis_ext.model_guard import state_digest
from celebbasis_ext.pipeline import TuneRequest, tune_identity
from celebbasis_ext.tuning import TuneOptions

from helpers import noise_photo, small_names_file

ROOT = Path(__file__).resolve().parents[1]
STANDIN_FILE = Path(__file__).resolve().parent / "host_standins" / "forge" / "standin.py"
NAME = "zqxperson"


def _tune(adapter, tmp_path, seed=23, overwrite=False, progress=None):
    request = TuneRequest(
        photos=[noise_photo(seed)], name=NAME, out_dir=embeddings_dir() / "celebbasis", face_encoder="none",
        options=TuneOptions(steps=2, mode="direct", pool_size=2, resolution=64, report_every=1, seed=seed),
        names_file=str(small_names_file(tmp_path)), k=32, basis_cache_dir=str(tmp_path / "basis"), overwrite=overwrite,
    )
    return tune_identity(adapter, request, progress=progress)


def _snapshot(adapter, host):
    """Everything of the host model tuning must leave as it was."""
    params = [(name, id(p), p.is_inference(), p.requires_grad)
              for module in adapter.frozen_modules() for name, p in module.named_parameters()]
    buffers = [(name, id(b), b.is_inference())
               for module in adapter.frozen_modules() for name, b in module.named_buffers()]
    infotext = host.classic_engine.last_extra_generation_params if host.flavor == "main" \
        else host.args.dynamic_args.last_extra_generation_params
    return {"digest": state_digest(adapter.frozen_modules()), "params": params, "buffers": buffers,
            "attention": host.unet.attention_function, "infotext": dict(infotext),
            "fixes": [engine.embeddings.fixes for engine in adapter.engines]}


def _one_step(adapter):
    learned = torch.randn(2, adapter.embedding_width, requires_grad=True)
    with adapter.tuning_session():
        latents = adapter.encode_images(torch.rand(2, 3, 64, 64) * 2 - 1)
        cond = adapter.encode_prompts(["a photo of {}", "a close-up photo of {} smiling"], learned)
        adapter.predict(latents, torch.tensor([10, 500]), cond).pow(2).mean().backward()
    return learned.grad


def _assert_host_uses(adapter, cond, embedding):
    """The host's txt2img conditioning for "a photo of <name>" is what the adapter trained with."""
    with torch.no_grad():
        ours = adapter.encode_prompts(["a photo of {}"], embedding)
    if isinstance(cond, dict):
        torch.testing.assert_close(cond["crossattn"], ours["crossattn"], atol=1e-5, rtol=1e-4)
        width = ours["pooled"].shape[1]
        torch.testing.assert_close(cond["vector"][:, :width], ours["pooled"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cond["vector"][:, width:], adapter._size_vector(1, 64, 64, ours["pooled"]))
    else:
        torch.testing.assert_close(cond, ours["crossattn"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("flavor, kind", [("neo", "sd15"), ("neo", "sdxl"), ("main", "sd15"), ("main", "sd20"),
                                          ("main", "sdxl")])
def test_tune_leaves_the_model_as_it_was_and_the_token_works_at_once(forge, tmp_path, flavor, kind):
    host = forge.boot(tmp_path / "webui", flavor=flavor, kind=kind, load=False)
    assert type(host.shared.sd_model).__name__ == "FakeInitialModel"
    adapter = adapter_for_loaded_model()  # loads the selected checkpoint first, as txt2img would
    sd_model = host.shared.sd_model
    assert isinstance(adapter, ForgeAdapter) and adapter.sd_model is sd_model
    assert adapter.encoder_widths == {"sd15": (32,), "sd20": (40,), "sdxl": (32, 48)}[kind]
    assert adapter.family.value == {"sd15": "sd1", "sd20": "sd2", "sdxl": "sdxl"}[kind]
    assert adapter.prediction_type == ("v_prediction" if kind == "sd20" else "epsilon")
    assert all(p.is_inference() for m in adapter.frozen_modules() for p in m.parameters())
    reference, _ = host.processing.txt2img("a photo of a cat", seed=1)
    before = _snapshot(adapter, host)
    calls, emptied = len(host.memory_management.load_calls), host.memory_management.empty_cache_calls

    outcome = _tune(adapter, tmp_path)

    assert outcome.path == Path(host.shared.cmd_opts.embeddings_dir) / "celebbasis" / f"{NAME}.safetensors"
    assert _snapshot(adapter, host) == before  # values, flags, devices, identity, inference flags, hooks
    assert adapter.last_aliases.copied_bytes == 0 and adapter.last_aliases.aliased_bytes > 0  # no second copy
    ours = host.memory_management.load_calls[calls]
    assert ours["models"] == ["KModel", "JointTextEncoder", "IntegratedAutoencoderKL"] and ours["inference_mode"]
    assert ours.get("force_full_load", True) and host.memory_management.empty_cache_calls > emptied
    again, _ = host.processing.txt2img("a photo of a cat", seed=1)
    assert torch.equal(again, reference)  # the next generation runs as before

    done = reload_embeddings(detect_host())
    engines = ["text_processing_engine_l", "text_processing_engine_g"] if kind == "sdxl" else ["text_processing_engine"]
    assert done == engines + ["cached_c"]
    for name in engines:
        assert NAME in getattr(sd_model, name).embeddings.word_embeddings
    cond, infotext = host.processing.txt2img_conditioning([f"a photo of {NAME}"])
    assert NAME in infotext["TI"]
    _assert_host_uses(adapter, cond, outcome.result.embedding)


def test_retraining_a_name_takes_effect_in_the_next_generation(forge, tmp_path):
    host = forge.boot(tmp_path / "webui", flavor="neo", kind="sdxl")
    adapter = adapter_for_loaded_model()
    first = _tune(adapter, tmp_path, seed=1)
    reload_embeddings()
    old, _ = host.processing.txt2img_conditioning([f"a photo of {NAME}"])
    second = _tune(adapter, tmp_path, seed=2, overwrite=True)
    stale, _ = host.processing.txt2img_conditioning([f"a photo of {NAME}"])
    assert torch.equal(stale["crossattn"], old["crossattn"])  # what a host without the reload would use
    reload_embeddings()
    fresh, _ = host.processing.txt2img_conditioning([f"a photo of {NAME}"])
    assert not torch.allclose(fresh["crossattn"], old["crossattn"])
    _assert_host_uses(adapter, fresh, second.result.embedding)
    assert not torch.equal(first.result.embedding, second.result.embedding)


def test_tunes_on_the_weights_without_lora_and_the_lora_comes_back(forge, tmp_path):
    host = forge.boot(tmp_path / "webui", flavor="main", kind="sd15")
    sd_model = host.shared.sd_model
    original = dict(sd_model.forge_objects_original.unet.model.named_parameters())
    forge.apply_lora(sd_model)
    reference, _ = host.processing.txt2img("a photo of a cat", seed=3)
    key = next(k for k in original if k.endswith("attn2.to_k.weight"))
    kmodel = sd_model.forge_objects_original.unet.model
    assert dict(kmodel.named_parameters())[key] is not original[key]  # LoRA merged into the weights
    seen = []

    def progress(_):  # during the run the UNet holds (an alias of) the weight without LoRA
        seen.append(dict(kmodel.named_parameters())[key].data_ptr() == original[key].data_ptr())

    _tune(adapter_for_loaded_model(), tmp_path, progress=progress)
    assert seen and all(seen)
    again, _ = host.processing.txt2img("a photo of a cat", seed=3)
    assert torch.equal(again, reference)


@pytest.mark.parametrize("disabled, error", [
    ("_use_pytorch_attention", "no backward"),
    ("_copy_norm_inputs", "inplace operation"),
    ("aliases", "nference tensor"),
])
def test_each_forge_workaround_is_needed(forge, tmp_path, monkeypatch, disabled, error):
    """The stand-in reproduces what breaks in Forge: a backward-less attention kernel, in-place residuals,
    inference-mode weights. With all workarounds on, gradients reach both text encoders' slots."""
    host = forge.boot(tmp_path / "webui", flavor="neo", kind="sdxl")
    grad = _one_step(ForgeAdapter(host.shared.sd_model))
    assert grad[:, :32].abs().sum() > 0 and grad[:, 32:].abs().sum() > 0
    if disabled == "aliases":
        monkeypatch.setattr(TrainableAliases, "apply", lambda self: self)
    else:
        monkeypatch.setattr(ForgeAdapter, disabled, staticmethod(lambda *args, **kwargs: None))
    with pytest.raises(RuntimeError, match=error):
        _one_step(ForgeAdapter(host.shared.sd_model))


@pytest.mark.parametrize("flavor, kind, storage, message", [
    ("main", "flux", None, "Flux models cannot be tuned"),
    ("neo", "sdxl-refiner", None, "SDXL refiner"),
    ("main", "sd15-inpaint", None, "inpainting"),
    ("neo", "sdxl-rf", None, "uses flow matching"),
    ("main", "sd15", torch.float8_e4m3fn, "quantized"),
    ("neo", "sd15", "nf4", "quantized"),
    ("neo", None, None, "could not load the selected checkpoint"),
    ("neo", "sd20", None, "could not load the selected checkpoint"),  # Neo has no SD2 engine
])
def test_unsupported_models_get_a_one_line_reason(forge, tmp_path, flavor, kind, storage, message):
    forge.boot(tmp_path / "webui", flavor=flavor, kind=kind, storage_dtype=storage, load=False)
    with pytest.raises(UnsupportedModel, match=message) as info:
        adapter_for_loaded_model()
    assert "\n" not in str(info.value)


def test_no_model_and_forge_classic_models_are_refused(forge, tmp_path):
    host = forge.boot(tmp_path / "webui", flavor="neo", kind="sd15", load=False)
    with pytest.raises(UnsupportedModel, match="no Stable Diffusion model is loaded"):
        adapter_for_loaded_model(host.sd_models.FakeInitialModel())
    assert type(host.shared.sd_model).__name__ == "FakeInitialModel"  # nothing was loaded by that
    classic = types.SimpleNamespace(forge_objects=object(), model=types.SimpleNamespace(diffusion_model=object()))
    with pytest.raises(UnsupportedModel, match="Forge classic"):
        adapter_for_loaded_model(classic)


def test_detection_by_capability(forge, tmp_path, monkeypatch):
    forge.shutdown()
    assert detect_host().kind == HostKind.STANDALONE
    forge.boot(tmp_path / "neo", flavor="neo", kind=None)
    info = detect_host()
    assert (info.kind, info.version, info.label) == (HostKind.FORGE_NEO, "2.26", "Forge Neo 2.26")
    assert embeddings_dir() == tmp_path / "neo" / "models" / "embeddings"
    forge.boot(tmp_path / "main", flavor="main", kind=None)
    assert (detect_host().kind, detect_host().version) == (HostKind.FORGE, "2.0.1v1.10.1")
    assert embeddings_dir() == tmp_path / "main" / "embeddings"
    monkeypatch.setitem(sys.modules, "modules_forge.forge_version", types.SimpleNamespace(version="classic"))
    assert detect_host().kind == HostKind.FORGE_CLASSIC
    monkeypatch.setitem(sys.modules, "modules_forge.forge_version", None)  # a version file that fails to import
    assert detect_host().kind == HostKind.FORGE  # still Forge, from its backend
    assert reload_embeddings() == ["cached_c"]  # nothing loaded yet: only the cache is cleared, no error


def test_a1111_standin_is_detected(tmp_path):
    a1111 = Path(__file__).resolve().parent / "host_standins" / "a1111"
    if not (a1111 / "standin.py").is_file():
        pytest.skip("no A1111 stand-in in this checkout")
    spec = importlib.util.spec_from_file_location("a1111_standin_for_detect", a1111 / "standin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.boot(tmp_path / "a1111", model=None)
        assert detect_host().kind == HostKind.A1111
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in ("modules", "launch")]:
            del sys.modules[name]


def test_host_modules_import_nothing_from_hosts_at_top_level_and_import_anywhere():
    for name in ("detect", "forge", "sdnext", "reload"):
        tree = ast.parse((ROOT / "celebbasis_ext" / "hosts" / f"{name}.py").read_text(encoding="utf-8"))
        top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        names = {alias.name.split(".")[0] for node in top if isinstance(node, ast.Import) for alias in node.names}
        names |= {(node.module or "").split(".")[0] for node in top
                  if isinstance(node, ast.ImportFrom) and not node.level}
        assert not names & {"modules", "modules_forge", "backend", "ldm", "sgm", "launch"}, name
    code = ("import celebbasis_ext.hosts.detect as d, celebbasis_ext.hosts.forge, celebbasis_ext.hosts.sdnext, "
            "celebbasis_ext.hosts.reload as r; print(d.detect_host().kind.value, r.reload_embeddings())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["standalone", "[]"]


class _ManualCastLinear(torch.nn.Linear):
    """Like Forge's ``backend.operations`` Linear with manual cast: a computation-dtype weight copy per forward."""
    parameters_manual_cast = True

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def _kept_weight_copies(model, x):
    """(x's gradient, how many fp32 weight-shaped tensors autograd keeps for the backward pass)."""
    kept = []

    def pack(tensor):
        if tensor.dtype == torch.float32 and tensor.shape == (64, 64):
            kept.append(tensor)
        return tensor

    x = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x)
    out.pow(2).sum().backward()
    return x.grad, len(kept)


def test_manual_cast_weight_copies_are_recomputed_not_kept():
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[_ManualCastLinear(64, 64) for _ in range(3)]).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(4, 64)
    plain_grad, plain_kept = _kept_weight_copies(model, x)
    assert plain_kept == 3  # one fp32 copy of each bf16 weight, kept until the backward pass

    undo = recompute_manual_casts([model])
    grad, kept = _kept_weight_copies(model, x)
    assert kept == 0 and torch.equal(grad, plain_grad)
    with torch.no_grad():
        assert torch.equal(model(x), torch.nn.Sequential(*model)(x))

    undo()
    assert not any("forward" in layer.__dict__ for layer in model)
    assert _kept_weight_copies(model, x)[1] == 3


def test_manual_cast_layers_that_copy_nothing_are_not_recomputed(monkeypatch):
    """Weights already in the input's dtype (Forge's CLIP in fp16 on a GPU) are not cast, so no checkpointing."""
    import torch.utils.checkpoint

    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = torch.nn.Sequential(_ManualCastLinear(64, 64)).requires_grad_(False)
    undo = recompute_manual_casts([model])
    model(torch.randn(2, 64, requires_grad=True)).sum().backward()
    assert calls == []
    model.to(torch.bfloat16)(torch.randn(2, 64, requires_grad=True)).sum().backward()
    assert calls == [1]
    undo()


def test_tuning_session_recomputes_manual_casts_and_undoes_it(forge, tmp_path):
    forge.boot(tmp_path / "webui", flavor="main", kind="sdxl", load=False)
    adapter = adapter_for_loaded_model()
    layers = [m for m in adapter.frozen_modules()[0].modules() if isinstance(m, torch.nn.Linear)]
    for layer in layers:  # as if Forge stored the UNet in another dtype than it computes in
        layer.parameters_manual_cast = True
    with adapter.tuning_session():
        assert all("forward" in layer.__dict__ for layer in layers)
    assert not any("forward" in layer.__dict__ for layer in layers)
