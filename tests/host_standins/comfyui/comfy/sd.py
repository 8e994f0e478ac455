"""``comfy.sd``: the CLIP and VAE objects nodes pass around.

As in ComfyUI: ``CLIP(target=None, embedding_directory=None, no_init=False, tokenizer_data={},
parameters=0, model_options={})`` builds ``cond_stage_model = target.clip(**params)`` in
``text_encoder_dtype`` (fp16 on the CPU) and ``tokenizer = target.tokenizer(embedding_directory=...)``,
wraps the model in a ``ModelPatcher`` (``patcher``, ``is_clip``); ``clone()`` shares
``cond_stage_model`` and ``tokenizer``; ``clip_layer(i)`` sets ``layer_idx``; ``tokenize(text)``;
``encode_from_tokens(tokens, return_pooled=False, return_dict=False)`` resets the clip options,
applies ``layer_idx``, loads the patcher and calls ``encode_token_weights``;
``encode_from_tokens_scheduled(tokens, ...)`` returns ``[[cond, {"pooled_output": pooled}]]``.
``VAE`` holds ``first_stage_model``, ``patcher``, ``device``, ``vae_dtype``, ``output_device``,
``process_input`` (x * 2 - 1) / ``process_output``; ``encode(pixels)`` takes an IMAGE batch
(B, H, W, C in 0-1), loads the patcher, returns raw (unscaled) latents; ``decode(latents)`` the
reverse. Here ``first_stage_model`` wraps a diffusers AutoencoderKL (``encode`` gives the
posterior's mode, as ComfyUI's regulariser does).
"""

import torch

import comfy.model_management as model_management
import comfy.model_patcher


class CLIP:
    def __init__(self, target=None, embedding_directory=None, no_init=False, tokenizer_data={}, parameters=0,
                 model_options={}):
        if no_init:
            return
        params = dict(target.params)
        load_device = model_options.get("load_device", model_management.text_encoder_device())
        offload_device = model_options.get("offload_device", model_management.text_encoder_offload_device())
        dtype = model_options.get("dtype", None) or model_management.text_encoder_dtype(load_device)
        params.update(dtype=dtype, device=offload_device, model_options=model_options)
        self.cond_stage_model = target.clip(**params)
        self.tokenizer = target.tokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)
        self.patcher = comfy.model_patcher.ModelPatcher(self.cond_stage_model, load_device=load_device,
                                                        offload_device=offload_device)
        self.patcher.is_clip = True
        self.layer_idx = None
        self.tokenizer_options = {}

    def clone(self):
        n = CLIP(no_init=True)
        n.patcher = self.patcher.clone()
        n.cond_stage_model = self.cond_stage_model
        n.tokenizer = self.tokenizer
        n.layer_idx = self.layer_idx
        n.tokenizer_options = self.tokenizer_options.copy()
        return n

    def clip_layer(self, layer_idx):
        self.layer_idx = layer_idx

    def tokenize(self, text, return_word_ids=False, **kwargs):
        return self.tokenizer.tokenize_with_weights(text, return_word_ids, **kwargs)

    def load_model(self):
        model_management.load_model_gpu(self.patcher)
        return self.patcher

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        self.cond_stage_model.reset_clip_options()
        if self.layer_idx is not None:
            self.cond_stage_model.set_clip_options({"layer": self.layer_idx})
        self.load_model()
        cond, pooled = self.cond_stage_model.encode_token_weights(tokens)[:2]
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict={}, show_pbar=True):
        out = self.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
        cond = out.pop("cond")
        out.update(add_dict)
        return [[cond, out]]

    def encode(self, text):
        return self.encode_from_tokens(self.tokenize(text))

    def load_sd(self, sd, full_model=False):
        if full_model:
            return self.cond_stage_model.load_state_dict(sd, strict=False)
        return self.cond_stage_model.load_sd(sd)


class AutoencoderKL(torch.nn.Module):
    """``first_stage_model``: ``encode(x)`` -> the posterior's mode, ``decode(z)`` -> pixels in -1..1."""

    def __init__(self, diffusers_vae):
        super().__init__()
        self.vae = diffusers_vae

    def encode(self, x):
        return self.vae.encode(x).latent_dist.mode()

    def decode(self, z):
        return self.vae.decode(z).sample


class VAE:
    def __init__(self, first_stage_model, device=None, dtype=None):
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)
        self.first_stage_model = first_stage_model.eval()
        self.device = device or model_management.vae_device()
        self.vae_dtype = dtype or model_management.vae_dtype(self.device)
        self.first_stage_model.to(self.vae_dtype)
        self.output_device = model_management.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=model_management.vae_offload_device())

    def encode(self, pixel_samples):
        pixel_samples = pixel_samples.movedim(-1, 1)
        model_management.load_models_gpu([self.patcher])
        pixels = self.process_input(pixel_samples).to(self.vae_dtype).to(self.device)
        return self.first_stage_model.encode(pixels).to(self.output_device).float()

    def decode(self, samples_in):
        model_management.load_models_gpu([self.patcher])
        out = self.first_stage_model.decode(samples_in.to(self.vae_dtype).to(self.device)).float()
        return self.process_output(out.to(self.output_device)).movedim(1, -1)
