"""``modules.processing`` of Forge, reduced to what a txt2img needs from the model.

``StableDiffusionProcessing.cached_c`` / ``cached_uc`` are the persistent
conditioning caches (``[params, cond, extra_generation_params]``): the same
prompt with the same parameters reuses the stored conditioning, whatever
happened to the embeddings since. ``txt2img`` loads the model if needed
(``forge_model_reload``), gets the conditioning through the cache, has the
memory manager load ``sd_model.forge_objects.unet`` (its LoRA patches are
merged then) and samples a few Euler steps through ``KModel.apply_model``,
all under ``torch.inference_mode`` as Forge runs generation.

``StableDiffusionProcessingTxt2Img(**fields)`` / ``process_images(p)`` / ``Processed`` as far as an
extension's preview render needs: ``process_images`` first calls ``forge_model_reload()`` (Forge's
``manage_model_and_prompt_cache``; ``p.sd_model`` becomes the loaded model), then, under
``torch.inference_mode``, one image per ``n_iter`` from ``all_prompts[i]`` (conditioning through the
persistent cache), decoded by ``sd_model.decode_first_stage``. ``Processed.infotexts`` carry the
"TI: name" parameters the text engines reported.

``shared.state`` as Forge's ``process_images_inner`` and samplers keep it: ``job_count`` set to ``n_iter`` only
when it is -1 (a caller's own count stays), ``skipped`` cleared and ``interrupted`` / ``stopping_generation``
checked before each image (break), ``nextjob()`` after each; the sampler sets ``sampling_steps`` and
``sampling_step = 0`` (``launch_sampling``), raises before a model call when ``interrupted`` or ``skipped``
(``CFGDenoiser.forward``) and then returns the last latent (``InterruptedException`` caught), and sets
``sampling_step`` to each finished step's index (``callback_state``).
"""

import os

import torch

from backend import memory_management
from backend.args import dynamic_args
from modules import sd_models, shared

FLAVOR = os.environ.get("FORGE_STANDIN_FLAVOR", "neo")


class SdConditioning(list):
    def __init__(self, prompts, width=1024, height=1024, is_negative_prompt=False):
        super().__init__(prompts)
        self.width, self.height, self.is_negative_prompt = width, height, is_negative_prompt


class StableDiffusionProcessing:
    cached_uc = [None, None, None]
    cached_c = [None, None, None]

    def clear_prompt_cache(self):
        StableDiffusionProcessing.cached_c = [None, None, None]
        StableDiffusionProcessing.cached_uc = [None, None, None]


def _infotext():
    if FLAVOR == "neo":
        return dynamic_args.last_extra_generation_params
    import backend.text_processing.classic_engine as engine

    return engine.last_extra_generation_params


@torch.inference_mode()
def txt2img_conditioning(prompts, width=64, height=64, steps=20):
    """The conditioning txt2img uses for ``prompts`` (through the persistent cache) and its infotext."""
    sd_model = shared.sd_model
    params = (tuple(prompts), steps, width, height, sd_model.sd_checkpoint_info.filename)
    cache = StableDiffusionProcessing.cached_c
    if cache[0] is not None and cache[0] == params:
        return cache[1], dict(cache[2])
    _infotext().clear()
    cond = sd_model.get_learned_conditioning(SdConditioning(prompts, width=width, height=height))
    extra = dict(_infotext())
    StableDiffusionProcessing.cached_c = [params, cond, extra]
    return cond, extra


@torch.inference_mode()
def txt2img(prompt, seed=0, steps=3, width=64, height=64):
    """A short deterministic sampling run; returns (latents, infotext params)."""
    sd_model, _ = sd_models.forge_model_reload()
    cond, extra = txt2img_conditioning([prompt], width, height, steps)
    return _sample(sd_model, cond, seed, steps, width, height), extra


def _sample(sd_model, cond, seed, steps, width, height, state=None):
    unet = sd_model.forge_objects.unet
    memory_management.load_models_gpu([unet])
    kmodel = unet.model
    generator = torch.Generator().manual_seed(seed)
    sigmas = torch.linspace(float(kmodel.predictor.sigmas[-1]), float(kmodel.predictor.sigmas[0]), steps + 1)
    x = torch.randn((1, 4, height // 8, width // 8), generator=generator) * sigmas[0]
    if isinstance(cond, dict):
        kwargs = {"c_crossattn": cond["crossattn"], "y": cond["vector"]}
    else:
        kwargs = {"c_crossattn": cond}
    if state is not None:
        state.sampling_steps, state.sampling_step = steps, 0
    for index in range(steps):
        if state is not None and (state.interrupted or state.skipped):
            break  # InterruptedException: the last latent
        sigma = sigmas[index].reshape(1)
        denoised = kmodel.apply_model(x, sigma, transformer_options={}, **kwargs)
        x = x + (x - denoised) / sigma * (sigmas[index + 1] - sigma)
        if state is not None:
            state.sampling_step = index
    return x


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, sd_model=None, prompt="", negative_prompt="", seed=-1, n_iter=1, batch_size=1, steps=20,
                 cfg_scale=7.0, distilled_cfg_scale=3.5, width=512, height=512, do_not_save_samples=False,
                 do_not_save_grid=False, **kwargs):
        self.sd_model, self.prompt, self.negative_prompt = sd_model, prompt, negative_prompt
        self.seed, self.n_iter, self.batch_size, self.steps = seed, n_iter, batch_size, steps
        self.cfg_scale, self.distilled_cfg_scale, self.width, self.height = cfg_scale, distilled_cfg_scale, width, height
        self.do_not_save_samples, self.do_not_save_grid = do_not_save_samples, do_not_save_grid
        self.closed = False
        for key, value in kwargs.items():
            setattr(self, key, value)

    def close(self):
        self.closed = True


class Processed:
    def __init__(self, p, images, infotexts, index_of_first_image=0):
        self.images, self.infotexts, self.index_of_first_image = images, infotexts, index_of_first_image
        self.prompt, self.seed = p.prompt, p.seed


def process_images(p):
    from PIL import Image

    state = shared.state
    p.sd_model, _ = sd_models.forge_model_reload()
    prompts = p.prompt if isinstance(p.prompt, list) else [p.prompt] * p.n_iter
    images, infotexts = [], []
    if state.job_count == -1:
        state.job_count = p.n_iter
    with torch.inference_mode():
        for index in range(p.n_iter):
            if state.skipped:
                state.skipped = False
            if state.interrupted or state.stopping_generation:
                break
            cond, extra = txt2img_conditioning([prompts[index]], p.width, p.height, p.steps)
            latents = _sample(p.sd_model, cond, int(p.seed) + index, p.steps, p.width, p.height, state)
            pixels = p.sd_model.decode_first_stage(latents)[0].clamp(-1, 1)
            array = ((pixels + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            images.append(Image.fromarray(array[..., :3]))
            infotexts.append(", ".join(f"{k}: {v}" for k, v in extra.items()))
            state.nextjob()
    return Processed(p, images, infotexts)
