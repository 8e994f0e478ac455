"""Start a stand-in ComfyUI inside the test process, load tiny models as its checkpoint loader would, run nodes.

    from standin import boot, shutdown
    host = boot(tmp_path)                        # folder_paths rooted at tmp_path, fresh comfy modules
    model, clip, vae = host.load(pipe)           # a tiny diffusers pipeline as MODEL / CLIP / VAE
    host.load_custom_node(repo_root)             # what ComfyUI does for custom_nodes/<repo>
    out = host.execute("CelebBasisTune", model=model, ...)   # under torch.inference_mode(), like execution.py
    shutdown()

``boot`` drops every ``comfy``, ``folder_paths`` and ``nodes`` module from ``sys.modules`` and puts
this folder first on ``sys.path`` (``$COMFY_STANDIN_ROOT`` roots ``folder_paths``;
``attention="sage"`` selects the stand-in of SageAttention, which has no backward). It installs a
progress hook like ComfyUI's server does (``main.hijack_progress``): each update is recorded in
``host.progress`` and the hook raises ``InterruptProcessingException`` when Interrupt was pressed.
``load`` builds the objects under ``torch.inference_mode()`` (ComfyUI loads checkpoints inside a
running workflow), so every weight is an inference tensor, and the CLIP in fp16 as on ComfyUI's CPU.
``execute`` follows ``execution.py``: the interrupt flag is cleared when a prompt starts,
``VALIDATE_INPUTS`` runs first (a string it returns fails validation), the node function runs in
inference mode, and ``InterruptProcessingException`` ends the prompt as "interrupted".
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import types
from pathlib import Path

STANDIN_DIR = Path(__file__).resolve().parent
PACKAGES = ("comfy", "folder_paths", "nodes")
INTERRUPTED = "interrupted"


class ValidationFailed(Exception):
    """What ComfyUI answers a queued prompt whose node inputs fail ``VALIDATE_INPUTS``."""


def purge() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in PACKAGES]:
        del sys.modules[name]


def shutdown() -> None:
    purge()
    while str(STANDIN_DIR) in sys.path:
        sys.path.remove(str(STANDIN_DIR))


class Host(types.SimpleNamespace):
    def load_custom_node(self, module_path) -> bool:
        return asyncio.run(self.nodes.load_custom_node(str(module_path)))

    def execute(self, node_name: str, **inputs):
        """One node of a prompt, as ComfyUI's executor runs it: its outputs, or ``INTERRUPTED``."""
        import torch

        node_class = self.nodes.NODE_CLASS_MAPPINGS[node_name]
        self.nodes.interrupt_processing(False)
        validate = getattr(node_class, "VALIDATE_INPUTS", None)
        if validate is not None:
            wanted = inspect.signature(validate).parameters
            verdict = validate(**{key: value for key, value in inputs.items() if key in wanted})
            if verdict is not True:
                raise ValidationFailed(f"Failed to validate prompt for output {node_name}: {verdict}")
        with torch.inference_mode():
            try:
                return getattr(node_class(), node_class.FUNCTION)(**inputs)
            except self.model_management.InterruptProcessingException:
                return INTERRUPTED

    def load(self, pipe, clip_dtype=None):
        """MODEL, CLIP and VAE of a tiny diffusers pipeline, built as ComfyUI's checkpoint loader builds them."""
        import torch
        from diffusers import AutoencoderKL

        comfy = self.comfy
        if getattr(pipe, "text_encoder_2", None) is not None:
            config_class, base_class, names = comfy.supported_models.SDXL, comfy.model_base.SDXL, ("l", "g")
            encoders = (pipe.text_encoder, pipe.text_encoder_2)
        elif pipe.text_encoder.config.hidden_act == "gelu":
            config_class, base_class, names = comfy.supported_models.SD20, comfy.model_base.BaseModel, ("h",)
            encoders = (pipe.text_encoder,)
        else:
            config_class, base_class, names = comfy.supported_models.SD15, comfy.model_base.BaseModel, ("l",)
            encoders = (pipe.text_encoder,)
        v_prediction = pipe.scheduler.config.get("prediction_type") == "v_prediction"
        model_type = comfy.model_base.ModelType.V_PREDICTION if v_prediction else comfy.model_base.ModelType.EPS
        unet_config = {"diffusers_config": dict(pipe.unet.config), "in_channels": pipe.unet.config.in_channels,
                       "context_dim": sum(encoder.config.hidden_size for encoder in encoders)}
        with torch.inference_mode():
            config = config_class(unet_config)
            base = base_class(config, model_type) if base_class is comfy.model_base.BaseModel else base_class(config)
            base.diffusion_model.unet.load_state_dict(pipe.unet.state_dict())
            model = comfy.model_patcher.ModelPatcher(base, load_device=self.model_management.get_torch_device(),
                                                     offload_device=self.model_management.unet_offload_device())
            options = {f"clip_{name}_model_config": _clip_config(encoder) for name, encoder in zip(names, encoders)}
            if clip_dtype is not None:
                options["dtype"] = clip_dtype
            folders = self.folder_paths.get_folder_paths("embeddings")
            clip = comfy.sd.CLIP(config.clip_target(), embedding_directory=folders, model_options=options)
            state = {}
            for name, encoder in zip(names, encoders):
                weights = encoder.state_dict()
                if "text_projection.weight" not in weights:  # the SD1 text model has none; ComfyUI's pools unprojected
                    width = encoder.config.hidden_size
                    weights["text_projection.weight"] = torch.eye(width)
                for key, value in weights.items():  # transformers 5 names them without "text_model."
                    if not key.endswith("position_ids"):
                        key = key if key.startswith(("text_model.", "text_projection")) else f"text_model.{key}"
                        state[f"clip_{name}.transformer.{key}"] = value
            missing, unexpected = clip.load_sd(state, full_model=True)
            assert not unexpected and all(key.endswith("logit_scale") for key in missing), (missing, unexpected)
            autoencoder = AutoencoderKL.from_config(pipe.vae.config)
            autoencoder.load_state_dict(pipe.vae.state_dict())
            vae = comfy.sd.VAE(comfy.sd.AutoencoderKL(autoencoder))
        return model, clip, vae


def _clip_config(encoder) -> dict:
    config = encoder.config
    return {"hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
            "max_position_embeddings": config.max_position_embeddings, "hidden_act": config.hidden_act,
            "eos_token_id": 49407,
            "projection_dim": config.projection_dim if hasattr(encoder, "text_projection") else config.hidden_size}


def boot(root, *, attention: str = "pytorch") -> Host:
    root = Path(root)
    shutdown()
    sys.path.insert(0, str(STANDIN_DIR))
    os.environ.update(COMFY_STANDIN_ROOT=str(root), COMFY_STANDIN_ATTENTION=attention)
    names = ["comfy.model_management", "comfy.utils", "comfy.sd", "comfy.model_base", "comfy.model_patcher",
             "comfy.model_sampling", "comfy.supported_models", "comfy.ldm.modules.attention", "folder_paths",
             "nodes"]
    modules = {name: importlib.import_module(name) for name in names}
    host = Host(root=root, comfy=sys.modules["comfy"], folder_paths=modules["folder_paths"], nodes=modules["nodes"],
                model_management=modules["comfy.model_management"], utils=modules["comfy.utils"],
                attention=modules["comfy.ldm.modules.attention"], progress=[])
    for folder in ("embeddings", "checkpoints", "custom_nodes"):
        os.makedirs(host.folder_paths.get_folder_paths(folder)[0], exist_ok=True)

    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        host.model_management.throw_exception_if_processing_interrupted()
        host.progress.append((value, total))

    host.utils.set_progress_bar_global_hook(hook)
    return host
