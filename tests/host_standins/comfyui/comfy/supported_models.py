"""``comfy.supported_models``: per-family config (UNet config, latent format, sampling settings, CLIP target).

As in ComfyUI for SD15, SD20 and SDXL: ``clip_target()`` gives ``ClipTarget(tokenizer, clip)``
(``SD1Tokenizer``/``SD1ClipModel``, ``SD2Tokenizer``/``SD2ClipModel``, ``SDXLTokenizer``/``SDXLClipModel``),
``latent_format`` SD15 or SDXL, linear betas 0.00085-0.012, ``manual_cast_dtype`` None. The UNet
config carries the tiny diffusers config (``diffusers_config``) and ComfyUI's ``context_dim``.
"""

import comfy.latent_formats
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.text_encoders.sd2_clip


class ClipTarget:
    def __init__(self, tokenizer, clip):
        self.clip = clip
        self.tokenizer = tokenizer
        self.params = {}


class BASE:
    sampling_settings = {}
    manual_cast_dtype = None
    latent_format = None

    def __init__(self, unet_config):
        self.unet_config = dict(unet_config)
        self.latent_format = self.latent_format()


class SD15(BASE):
    latent_format = comfy.latent_formats.SD15

    def clip_target(self, state_dict={}):
        return ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)


class SD20(BASE):
    latent_format = comfy.latent_formats.SD15

    def clip_target(self, state_dict={}):
        return ClipTarget(comfy.text_encoders.sd2_clip.SD2Tokenizer, comfy.text_encoders.sd2_clip.SD2ClipModel)


class SDXL(BASE):
    latent_format = comfy.latent_formats.SDXL

    def clip_target(self, state_dict={}):
        return ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
