"""Load a Stable Diffusion model into diffusers, offline: a folder or one file.

``load_pipeline(model)`` takes

* a **diffusers folder** (``model_index.json`` beside ``unet/``, ``vae/``,
  ``text_encoder/`` ...), loaded with ``from_pretrained(local_files_only=True,
  use_safetensors=True)``; a Hugging Face id (``owner/name``) is looked up in
  the local Hugging Face cache only; or
* a **single-file ``.safetensors`` checkpoint** in the original layout
  (CompVis ``ldm`` for SD1.x/SD2.x, Stability ``sgm`` for SDXL), the files
  WebUIs use. Only the safetensors header is read to recognise it: the family
  from the key names (``conditioner.embedders.1`` -> SDXL,
  ``cond_stage_model.model`` -> SD2, ``cond_stage_model.transformer`` -> SD1),
  the architecture by comparing tensor widths with those in
  ``architectures.py`` (SD1.5, SD2.1, SDXL and the tiny test models). A
  diffusers config folder for that architecture (configs, scheduler and the
  CLIP tokenizer files from ``clip_tokenizer``) is written once into the cache
  and handed to diffusers' ``from_single_file(path, config=folder,
  local_files_only=True)``, which converts the weights. Nothing is downloaded.
  A few tensors are then compared with the file, because diffusers loads
  with ``strict=False`` and would leave a block it did not recognise random.

Prediction type. Keys cannot tell an SD2 768-v model from a 512 epsilon one,
so for SD2 single files the order is: the ``prediction_type`` argument, an
A1111-style ``NAME.yaml`` beside the file (``parameterization: "v"``), the
file name (``768``, ``-v``, ``v-pred`` mean v; ``512``, ``base`` mean
epsilon), then v-prediction at 768 px, because SD 2.1-768-v and its fine-tunes
are what SD2 users mostly have. SD1 and SDXL are epsilon unless the argument
says otherwise or the file carries the ``v_pred`` marker key (SDXL v-pred
fine-tunes; ``ztsnr`` there also turns on the zero-terminal-SNR schedule).
For folders the scheduler config decides; the argument overrides it too.

Device ``auto``: cuda, then mps, then cpu. Dtype ``auto``: fp32 on CPU,
fp16 on CUDA and MPS, except SD2 on a bf16-capable GPU (bf16: SD 2.1 overflows
in fp16). The safety checker is never loaded (as in the WebUIs). Single files
need diffusers 0.28+ (``config=`` on ``from_single_file``); folders load with
any supported diffusers.

Refused with one-line messages: pickles (``.ckpt``/``.pt``/``.bin``/...),
truncated or corrupt files, LoRAs, embeddings and other non-checkpoints,
SD3/Flux and EDM models, inpainting and instruct-pix2pix UNets, the SDXL
refiner, and any checkpoint whose sizes match no known architecture (pass
``architecture=`` for a tiny test model under another name).

Modules, one job each: ``source`` (what ``model`` names: a path or a Hugging
Face id), ``options`` (device, dtype, prediction type), ``model_info``
(``ModelInfo``; a loaded pipeline's family), ``folder`` (diffusers folders),
``checkpoint_header`` (the safetensors header and original key prefixes),
``recognise`` (family, architecture and prediction type of a single file),
``config_folder`` (the config folder handed to diffusers) and
``single_file`` (conversion and the check that every weight came from the
file). This module is the front: ``load_pipeline``, ``inspect_model``,
``describe_model``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from .checkpoint_header import read_safetensors_header
from .config_folder import config_folder_for
from .folder import inspect_folder, load_folder
from .model_info import ModelInfo, describe_pipeline, pipeline_family
from .options import PREDICTION_TYPES, normalize_prediction_type, resolve_device, resolve_dtype
from .recognise import inspect_single_file
from .single_file import load_single_file
from .source import PICKLE_SUFFIXES, model_label, resolve_model_path

__all__ = [
    "PICKLE_SUFFIXES", "PREDICTION_TYPES", "ModelInfo", "config_folder_for", "describe_model", "inspect_model",
    "load_pipeline", "normalize_prediction_type", "pipeline_family", "read_safetensors_header", "resolve_device",
    "resolve_dtype",
]


def load_pipeline(
    model: Union[str, os.PathLike],
    device: Any = "auto",
    dtype: Any = "auto",
    *,
    prediction_type: Optional[str] = None,
    architecture: Optional[str] = None,
):
    """Load a diffusers ``StableDiffusionPipeline``/``StableDiffusionXLPipeline`` offline.

    ``model``: a diffusers folder or a single-file ``.safetensors`` checkpoint.
    ``device``: auto (cuda > mps > cpu), cpu, cuda[:N], mps. ``dtype``: auto
    (see ``resolve_dtype``), fp32, fp16, bf16 or a torch dtype.
    ``prediction_type``: auto/epsilon/v overrides what the file or folder says.
    ``architecture``: an ``architectures.py`` name for a single file whose
    sizes should not be guessed. The result carries ``celebbasis_model_info``
    (a ``ModelInfo``) and its progress bar is left as diffusers sets it.
    """
    requested_prediction = normalize_prediction_type(prediction_type)
    path = resolve_model_path(model)
    torch_device = resolve_device(device)
    if path.is_dir():
        info = inspect_folder(path, requested_prediction)
        torch_dtype = resolve_dtype(dtype, torch_device, info.family)
        pipe = load_folder(path, info, torch_dtype)
    else:
        info, header = inspect_single_file(path, requested_prediction, architecture)
        torch_dtype = resolve_dtype(dtype, torch_device, info.family)
        pipe = load_single_file(path, info, header, torch_dtype)
    if requested_prediction and pipe.scheduler.config.get("prediction_type") != requested_prediction:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=requested_prediction)
    pipe = pipe.to(torch_device)
    if any(getattr(pipe, name, None) is not None and getattr(pipe, name).dtype != torch_dtype
           for name in ("unet", "vae", "text_encoder", "text_encoder_2")):
        pipe = pipe.to(dtype=torch_dtype)
    info.label = model_label(model, path)
    pipe.celebbasis_model_info = info
    return pipe


def inspect_model(model, *, prediction_type: Optional[str] = None, architecture: Optional[str] = None) -> ModelInfo:
    """Recognise ``model`` without loading weights; raise BadInput/UnsupportedModel if unusable."""
    path = resolve_model_path(model)
    if path.is_dir():
        info = inspect_folder(path, normalize_prediction_type(prediction_type))
    else:
        info = inspect_single_file(path, normalize_prediction_type(prediction_type), architecture)[0]
    info.label = model_label(model, path)
    return info


def describe_model(model, *, prediction_type: Optional[str] = None, architecture: Optional[str] = None) -> dict:
    """Family, prediction type, name and native resolution of a model.

    ``model`` is a path (folder or ``.safetensors``; only configs or the header
    are read, no weights) or a loaded diffusers pipeline.
    """
    if isinstance(model, (str, os.PathLike)):
        return inspect_model(model, prediction_type=prediction_type, architecture=architecture).as_dict()
    info = getattr(model, "celebbasis_model_info", None)
    if isinstance(info, ModelInfo):
        return info.as_dict()
    return describe_pipeline(model)
