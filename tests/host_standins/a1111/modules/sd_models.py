"""modules/sd_models.py: loading the (tiny stand-in) checkpoint the way 1.10.1 prepares a model.

``load_model(checkpoint_info=None)`` builds ``standin_models.build(kind)`` and
then does what the real ``load_model``/``load_model_weights`` do to it, in the
same order: ``set_model_type`` (``is_sd1/is_sd2/is_sdxl/is_ssd/is_sd3``),
``extend_sdxl``, ``is_sdxl_inpaint``, fp32 (``--no-half``) or fp16 with
``alphas_cumprod`` kept fp32 and ``alphas_cumprod_original`` recorded, FP8
storage of Linear/Conv weights when ``opts.fp8_storage`` asks for it,
``sd_model_hash``/``sd_checkpoint_info``, ``send_model_to_device``
(``lowvram.apply``), ``model_hijack.hijack``, ``eval()``, a forced embeddings
reload and ``model_loaded_callback``.

The kind comes from ``checkpoint_info.kind`` or ``$A1111_STANDIN_MODEL`` (default sd1).
"""

import hashlib
import os
import threading

import torch

from modules import devices, shared, lowvram, script_callbacks, sd_hijack, sd_models_xl, sd_hijack_unet, errors  # noqa: F401
from modules.paths_internal import models_path

import standin_models

model_path = os.path.join(models_path, "Stable-diffusion")


class CheckpointInfo:
    def __init__(self, filename, kind="sd1"):
        self.filename = filename
        self.kind = kind
        name = os.path.basename(filename)
        self.name = name
        self.name_for_extra = os.path.splitext(name)[0]
        self.model_name = os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0]
        self.sha256 = hashlib.sha256(f"standin:{kind}".encode()).hexdigest()
        self.shorthash = self.sha256[0:10]
        self.hash = self.sha256[0:8]
        self.title = f'{name} [{self.shorthash}]'
        self.short_title = f'{self.name_for_extra} [{self.shorthash}]'
        self.metadata = {}

    def calculate_shorthash(self):
        return self.shorthash


def checkpoint_for(kind):
    return CheckpointInfo(os.path.join(model_path, f"tiny-{kind}.safetensors"), kind)


def select_checkpoint():
    return checkpoint_for(os.environ.get("A1111_STANDIN_MODEL", "sd1"))


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        if self.was_loaded_at_least_once:
            return self.sd_model

        if self.sd_model is None:
            with self.lock:
                if self.sd_model is not None or self.was_loaded_at_least_once:
                    return self.sd_model

                try:
                    load_model()
                except Exception as e:
                    errors.display(e, "loading stable diffusion model", full_traceback=True)
                    self.sd_model = None

        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        if v is not None and v not in self.loaded_sd_models:
            self.loaded_sd_models.insert(0, v)


model_data = SdModelData()


def check_fp8(model):
    if model is None:
        return None
    if shared.opts.fp8_storage == "Enable":
        return True
    if getattr(model, "is_sdxl", False) and shared.opts.fp8_storage == "Enable for SDXL":
        return True
    return False


def set_model_type(model):
    model.is_sd1 = False
    model.is_sd2 = False
    model.is_sdxl = False
    model.is_ssd = False
    model.is_sd3 = False

    if hasattr(model, 'conditioner'):
        model.is_sdxl = True
        model.model_type = "SDXL"
    elif hasattr(model.cond_stage_model, 'model'):
        model.is_sd2 = True
        model.model_type = "SD2"
    else:
        model.is_sd1 = True
        model.model_type = "SD1"


def load_model_weights(model, checkpoint_info):
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title

    set_model_type(model)
    if not hasattr(model, 'latent_channels'):
        model.latent_channels = 4

    if model.is_sdxl:
        sd_models_xl.extend_sdxl(model)

    model.is_sdxl_inpaint = model.is_sdxl and model.model.diffusion_model.in_channels == 9

    if shared.cmd_opts.no_half:
        model.float()
        model.alphas_cumprod_original = model.alphas_cumprod
        devices.dtype_unet = torch.float32
    else:
        vae = model.first_stage_model
        if shared.cmd_opts.no_half_vae:
            model.first_stage_model = None
        alphas_cumprod = model.alphas_cumprod
        model.alphas_cumprod = None
        model.half()
        model.alphas_cumprod = alphas_cumprod
        model.alphas_cumprod_original = alphas_cumprod
        model.first_stage_model = vae
        devices.dtype_unet = torch.float16

    if check_fp8(model):
        devices.fp8 = True
        first_stage = model.first_stage_model
        model.first_stage_model = None
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.to(torch.float8_e4m3fn)
        model.first_stage_model = first_stage
    else:
        devices.fp8 = False

    devices.unet_needs_upcast = shared.cmd_opts.upcast_sampling and devices.dtype == torch.float16 and devices.dtype_unet == torch.float16

    model.first_stage_model.to(devices.dtype_vae)
    model.model.diffusion_model.dtype = next(model.model.diffusion_model.parameters()).dtype

    model.sd_model_hash = checkpoint_info.calculate_shorthash()
    model.sd_model_checkpoint = checkpoint_info.filename
    model.sd_checkpoint_info = checkpoint_info
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256


def get_empty_cond(sd_model):
    if hasattr(sd_model, 'get_learned_conditioning'):
        d = sd_model.get_learned_conditioning([""])
    else:
        d = sd_model.cond_stage_model([""])

    if isinstance(d, dict):
        d = d['crossattn']

    return d


def send_model_to_cpu(m):
    if m is not None:
        if m.lowvram:
            lowvram.send_everything_to_cpu()
        else:
            m.to(devices.cpu)

    devices.torch_gc()


def model_target_device(m):
    return devices.cpu if lowvram.is_needed(m) else devices.device


def send_model_to_device(m):
    lowvram.apply(m)

    if not m.lowvram:
        m.to(shared.device)


def send_model_to_trash(m):
    m.to(device="meta")
    devices.torch_gc()


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    checkpoint_info = checkpoint_info or select_checkpoint()

    if model_data.sd_model:
        send_model_to_trash(model_data.sd_model)
        model_data.sd_model = None
        model_data.loaded_sd_models.clear()

    sd_model = standin_models.build(checkpoint_info.kind)
    sd_model.used_config = f"standin:{checkpoint_info.kind}"

    load_model_weights(sd_model, checkpoint_info)

    send_model_to_device(sd_model)

    sd_hijack.model_hijack.hijack(sd_model)

    sd_model.eval()
    model_data.set_sd_model(sd_model)
    model_data.was_loaded_at_least_once = True

    sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)

    script_callbacks.model_loaded_callback(sd_model)

    if not devices.fp8:  # the stand-in's fp8 weights cannot run on a CPU; the real host casts under autocast
        with devices.autocast(), torch.no_grad():
            sd_model.cond_stage_model_empty_prompt = get_empty_cond(sd_model)

    return sd_model


def unload_model_weights(sd_model=None, info=None):
    send_model_to_cpu(sd_model or shared.sd_model)
    return sd_model
