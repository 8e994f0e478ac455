"""``modules.sd_models`` of SD.Next, reduced: ``reload_model_weights`` builds the selected tiny pipeline
(``tiny-sd1``, ``tiny-sdxl``, ``tiny-sd1-inpaint``, ``tiny-sdxl-refiner``, ``flux``), applies the offload
mode, attaches ``embedding_db`` and loads the embeddings folder, like SD.Next's ``load_diffuser``."""

import types

import torch

from modules import modeldata, shared, textual_inversion
from modules.modeldata import model_data


class FluxPipeline:
    """A stand-in transformer pipeline (no UNet)."""

    def __init__(self):
        self.transformer = torch.nn.Linear(4, 4)
        self.components = {"transformer": self.transformer}


def _build(name):
    from celebbasis_ext.architectures import build_pipeline

    if name == "flux":
        return FluxPipeline()
    base = name.replace("-inpaint", "").replace("-refiner", "")
    pipe = build_pipeline(base, seed=0)
    if name.endswith("-inpaint"):
        from diffusers import UNet2DConditionModel

        config = dict(pipe.unet.config)
        config["in_channels"] = 9
        pipe.unet = UNet2DConditionModel.from_config(config)
    if name.endswith("-refiner"):
        pipe.text_encoder = None
        pipe.tokenizer = None
    return pipe


def reload_model_weights(sd_model=None, info=None, op="model", force=False, revision=None):
    name = shared.opts.sd_model_checkpoint
    pipe = _build(name)
    pipe.sd_checkpoint_info = types.SimpleNamespace(model_name=name, name=name, filename=f"{name}.safetensors")
    model_data.sd_model = pipe
    if shared.opts.diffusers_offload_mode == "balanced" and getattr(pipe, "unet", None) is not None:
        from modules.sd_offload import apply_balanced_offload

        apply_balanced_offload(pipe)
    pipe.embedding_db = textual_inversion.EmbeddingDatabase()
    pipe.embedding_db.add_embedding_dir(shared.opts.embeddings_dir)
    pipe.embedding_db.load_textual_inversion_embeddings(force_reload=True)
    return pipe


def unload_model_weights(op="model"):
    modeldata.model_data.sd_model = None
