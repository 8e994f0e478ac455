"""The diffusers config folder (configs, scheduler, CLIP tokenizer files; no weights) that
``from_single_file`` is given for a recognised checkpoint, written once into the cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..adapter import ModelFamily
from .model_info import ModelInfo

#: Bumped whenever the written config folders change shape.
_CONFIG_FORMAT = 1


def _tokenizer_files(folder: Path, pad_token: str) -> None:
    from ..clip_tokenizer import END_TOKEN, START_TOKEN, tokenizer_files_dir

    source = tokenizer_files_dir()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "vocab.json", folder / "vocab.json")
    shutil.copyfile(source / "merges.txt", folder / "merges.txt")
    special = {"bos_token": START_TOKEN, "eos_token": END_TOKEN, "unk_token": END_TOKEN, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _config_files(arch, info: ModelInfo) -> dict[str, dict]:
    """Relative path -> JSON content of the diffusers config folder for ``arch``."""
    import diffusers
    import transformers

    unet = {"_class_name": "UNet2DConditionModel", "_diffusers_version": diffusers.__version__, **arch.unet}
    vae = {"_class_name": "AutoencoderKL", "_diffusers_version": diffusers.__version__, **arch.vae}
    if arch.name == "sd21" and info.prediction_type == "epsilon":
        unet["sample_size"] = 64
        vae["sample_size"] = 512
    scheduler = {"_class_name": "DDIMScheduler", "_diffusers_version": diffusers.__version__, **arch.scheduler,
                 "prediction_type": info.prediction_type}
    if info.zero_terminal_snr:
        scheduler.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    files = {"unet/config.json": unet, "vae/config.json": vae, "scheduler/scheduler_config.json": scheduler}
    text_names = ["text_encoder", "text_encoder_2"][: len(arch.text_encoders)]
    index: dict[str, Any] = {"_diffusers_version": diffusers.__version__}
    for name, text in zip(text_names, arch.text_encoders):
        text = dict(text)
        class_name = "CLIPTextModelWithProjection" if text.pop("with_projection") else "CLIPTextModel"
        files[f"{name}/config.json"] = {"architectures": [class_name], "model_type": "clip_text_model",
                                        "torch_dtype": "float32", "transformers_version": transformers.__version__,
                                        **text}
        index[name] = ["transformers", class_name]
    index.update(unet=["diffusers", "UNet2DConditionModel"], vae=["diffusers", "AutoencoderKL"],
                 scheduler=["diffusers", "DDIMScheduler"], tokenizer=["transformers", "CLIPTokenizer"])
    if arch.family == ModelFamily.SDXL:
        index.update(_class_name="StableDiffusionXLPipeline", tokenizer_2=["transformers", "CLIPTokenizer"],
                     force_zeros_for_empty_prompt=True, image_encoder=[None, None], feature_extractor=[None, None])
    else:
        index.update(_class_name="StableDiffusionPipeline", safety_checker=[None, None],
                     feature_extractor=[None, None], requires_safety_checker=False, image_encoder=[None, None])
    files["model_index.json"] = index
    return files


def config_folder_for(info: ModelInfo) -> Path:
    """A diffusers config folder (no weights) for a recognised single file, made once in the cache."""
    from ..architectures import get_architecture
    from ..clip_tokenizer import END_TOKEN, cache_dir

    arch = get_architecture(info.architecture)
    files = _config_files(arch, info)
    digest = hashlib.sha256(json.dumps([_CONFIG_FORMAT, files], sort_keys=True, default=str).encode()).hexdigest()
    root = cache_dir() / "diffusers_configs"
    folder = root / f"{info.architecture}-{info.prediction_type}-{digest[:12]}"
    if (folder / "model_index.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for relative, content in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(content, indent=2), encoding="utf-8")
        first_pad = "!" if arch.family == ModelFamily.SD2 else END_TOKEN
        _tokenizer_files(staging / "tokenizer", first_pad)
        if arch.family == ModelFamily.SDXL:
            _tokenizer_files(staging / "tokenizer_2", "!")
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / "model_index.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
