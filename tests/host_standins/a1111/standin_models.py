"""Tiny stand-ins of the model objects AUTOMATIC1111 1.10.1 keeps in ``shared.sd_model``.

Not an A1111 module: the host builds these classes from the ``ldm``
(Stability-AI/stablediffusion @ cf1d67a6) and ``sgm`` (generative-models @
45c443b3) repositories. Here they are rebuilt with the same attribute names,
the same call signatures and the same freezing, on tiny diffusers and
transformers parts, so that the extension sees what it sees in the host:

* SD1/SD2 ``LatentDiffusion``: ``model`` (``DiffusionWrapper`` with
  ``diffusion_model`` and ``conditioning_key``), ``cond_stage_model``
  (``FrozenCLIPEmbedder`` / ``FrozenOpenCLIPEmbedder``), ``first_stage_model``
  (``AutoencoderKL`` whose ``encode`` gives a ``DiagonalGaussianDistribution``),
  the ``alphas_cumprod`` buffer, ``parameterization`` and ``scale_factor``.
* SDXL ``DiffusionEngine``: ``model`` (``OpenAIWrapper``), ``conditioner``
  (``GeneralConditioner`` with CLIP-L, OpenCLIP-bigG and size embedders),
  ``denoiser`` (with ``scaling``) and ``first_stage_model`` whose ``encode``
  already samples.

Widths are tiny (CLIP-L 32, OpenCLIP 48 instead of 768 / 1024 / 1280) and a
diffusers ``UNet2DConditionModel`` sits inside a wrapper with ldm's
``forward(x, timesteps, context, y)``. transformers 5 has no ``text_model``
level inside ``CLIPTextModel``; ``CLIPTextModel430`` has the 4.30 layout
A1111 pins, under either version (``transformer.text_model.embeddings.token_embedding``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

#: The kinds ``build(kind)`` knows.
KINDS = ("sd1", "sd2", "sdxl", "sdxl-refiner", "sd1-inpaint")

CLIP_L_WIDTH = 32
OPENCLIP_WIDTH = 48
SIZE_EMBED_DIM = 8  # sgm ConcatTimestepEmbedderND outdim (256 in SDXL)
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
START_ID, END_ID = 49406, 49407


def disabled_train(self, mode=True):
    """ldm/sgm replace ``train`` of frozen parts with this: train(True) changes nothing."""
    return self


def freeze(module: nn.Module) -> nn.Module:
    """What ldm's ``instantiate_cond_stage``/``instantiate_first_stage`` do."""
    module = module.eval()
    module.train = disabled_train.__get__(module)
    for param in module.parameters():
        param.requires_grad = False
    return module


# ---------------------------------------------------------------- tokenizers
def clip_tokenizer():
    """transformers' CLIPTokenizer with the real CLIP BPE vocabulary (ids as in SD)."""
    from celebbasis_ext.clip_tokenizer import clip_tokenizer as build

    return build()


class SimpleTokenizer:
    """``open_clip.tokenizer._tokenizer`` as A1111 uses it: ``encoder`` dict and ``encode(text)``.

    Same BPE ids as open_clip (both are CLIP's vocabulary); open_clip names the
    specials ``<start_of_text>``/``<end_of_text>``.
    """

    def __init__(self):
        self._hf = clip_tokenizer()
        self.encoder = dict(self._hf.get_vocab())
        self.encoder["<start_of_text>"] = START_ID
        self.encoder["<end_of_text>"] = END_ID
        self.decoder = {v: k for k, v in self.encoder.items()}

    def encode(self, text: str) -> list[int]:
        return list(self._hf(text, add_special_tokens=False, truncation=False)["input_ids"])


def open_clip_tokenize(texts, context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """``open_clip.tokenize``: start + ids + end, zero padded, truncated to 77."""
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = SimpleTokenizer.shared()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [START_ID] + tokenizer.encode(text) + [END_ID]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = END_ID
        result[i, : len(tokens)] = torch.tensor(tokens)
    return result


_shared_simple_tokenizer: Optional[SimpleTokenizer] = None


def _shared() -> SimpleTokenizer:
    global _shared_simple_tokenizer
    if _shared_simple_tokenizer is None:
        _shared_simple_tokenizer = SimpleTokenizer()
    return _shared_simple_tokenizer


SimpleTokenizer.shared = staticmethod(_shared)


# ---------------------------------------------------------------- text encoders
class CLIPTextModel430(nn.Module):
    """transformers 4.30's ``CLIPTextModel`` layout: the transformer is at ``.text_model``."""

    def __init__(self, width: int, layers: int = 2, heads: int = 4, act: str = "quick_gelu"):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        self.config = CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=CONTEXT_LENGTH, hidden_act=act,
            projection_dim=width, bos_token_id=START_ID, eos_token_id=END_ID, pad_token_id=1,
        )
        model = CLIPTextModel(self.config)
        # transformers 4.x (A1111's 4.30, Neo's 4.56) nests the transformer at .text_model; 5.x does not
        self.text_model = getattr(model, "text_model", model)

    def forward(self, input_ids=None, output_hidden_states=None, **kwargs):
        # A1111 passes output_hidden_states=-CLIP_stop_at_last_layers (a truthy int).
        return self.text_model(input_ids=input_ids, output_hidden_states=bool(output_hidden_states), **kwargs)


class AbstractEmbModel(nn.Module):
    """sgm's base: ``is_trainable``, ``ucg_rate``, ``input_key`` (plain attributes here)."""

    def __init__(self):
        super().__init__()
        self.is_trainable = None
        self.ucg_rate = None
        self.input_key = None


class FrozenCLIPEmbedder(AbstractEmbModel):
    """ldm's / sgm's ``FrozenCLIPEmbedder`` (A1111 dispatches on the class name)."""

    LAYERS = ["last", "pooled", "hidden"]

    def __init__(self, width=CLIP_L_WIDTH, device="cpu", max_length=77, freeze=True, layer="last",
                 layer_idx=None, always_return_pooled=False):
        super().__init__()
        assert layer in self.LAYERS
        self.tokenizer = clip_tokenizer()
        self.transformer = CLIPTextModel430(width)
        self.device = device
        self.max_length = max_length
        if freeze:
            self.freeze()
        self.layer = layer
        self.layer_idx = layer_idx
        self.return_pooled = always_return_pooled

    def freeze(self):
        self.transformer = self.transformer.eval()
        for param in self.parameters():
            param.requires_grad = False

    def forward(self, text):
        batch_encoding = self.tokenizer(text, truncation=True, max_length=self.max_length, return_length=True,
                                        return_overflowing_tokens=False, padding="max_length", return_tensors="pt")
        tokens = batch_encoding["input_ids"].to(self.device)
        outputs = self.transformer(input_ids=tokens, output_hidden_states=self.layer == "hidden")
        if self.layer == "last":
            z = outputs.last_hidden_state
        elif self.layer == "pooled":
            z = outputs.pooler_output[:, None, :]
        else:
            z = outputs.hidden_states[self.layer_idx]
        if self.return_pooled:
            return z, outputs.pooler_output
        return z

    def encode(self, text):
        return self(text)


class ResidualAttentionBlock(nn.Module):
    """open_clip 2.20's text block: LND layout, ``forward(x, attn_mask=...)``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))

    def attention(self, x, attn_mask=None):
        attn_mask = attn_mask.to(x.dtype) if attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=attn_mask)[0]

    def forward(self, x, attn_mask=None):
        x = x + self.attention(self.ln_1(x), attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])


class OpenCLIPTextModel(nn.Module):
    """open_clip's ``CLIP`` after ldm's ``del model.visual``: the text tower only."""

    def __init__(self, width: int = OPENCLIP_WIDTH, layers: int = 2, heads: int = 4, embed_dim: Optional[int] = None):
        super().__init__()
        self.context_length = CONTEXT_LENGTH
        self.vocab_size = VOCAB_SIZE
        self.token_embedding = nn.Embedding(VOCAB_SIZE, width)
        self.positional_embedding = nn.Parameter(torch.randn(CONTEXT_LENGTH, width) * 0.01)
        self.transformer = Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim or width) * width ** -0.5)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        mask = torch.empty(CONTEXT_LENGTH, CONTEXT_LENGTH).fill_(float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)


class FrozenOpenCLIPEmbedder(AbstractEmbModel):
    """ldm's SD2 text encoder (``layer='penultimate'`` in the v2 configs)."""

    LAYERS = ["last", "penultimate"]

    def __init__(self, width=OPENCLIP_WIDTH, device="cpu", max_length=77, freeze=True, layer="penultimate"):
        super().__init__()
        self.model = OpenCLIPTextModel(width)
        self.device = device
        self.max_length = max_length
        if freeze:
            self.freeze()
        self.layer = layer
        self.layer_idx = {"last": 0, "penultimate": 1}[layer]

    def freeze(self):
        self.model = self.model.eval()
        for param in self.parameters():
            param.requires_grad = False

    def forward(self, text):
        tokens = open_clip_tokenize(text)
        return self.encode_with_transformer(tokens.to(self.device))

    def encode_with_transformer(self, text):
        x = self.model.token_embedding(text)
        x = x + self.model.positional_embedding
        x = x.permute(1, 0, 2)
        x = self.text_transformer_forward(x, attn_mask=self.model.attn_mask)
        x = x.permute(1, 0, 2)
        return self.model.ln_final(x)

    def text_transformer_forward(self, x, attn_mask=None):
        for i, r in enumerate(self.model.transformer.resblocks):
            if i == len(self.model.transformer.resblocks) - self.layer_idx:
                break
            x = r(x, attn_mask=attn_mask)
        return x

    def encode(self, text):
        return self(text)


class FrozenOpenCLIPEmbedder2(AbstractEmbModel):
    """sgm's bigG encoder: ``layer='penultimate'``, ``always_return_pooled``, ``legacy=False``."""

    LAYERS = ["pooled", "last", "penultimate"]

    def __init__(self, width=OPENCLIP_WIDTH, device="cpu", max_length=77, freeze=True, layer="penultimate",
                 always_return_pooled=True, legacy=False):
        super().__init__()
        self.model = OpenCLIPTextModel(width)
        self.device = device
        self.max_length = max_length
        self.return_pooled = always_return_pooled
        if freeze:
            self.freeze()
        self.layer = layer
        self.layer_idx = {"last": 0, "penultimate": 1, "pooled": 0}[layer]
        self.legacy = legacy

    def freeze(self):
        self.model = self.model.eval()
        for param in self.parameters():
            param.requires_grad = False

    def forward(self, text):
        tokens = open_clip_tokenize(text)
        z = self.encode_with_transformer(tokens.to(self.device))
        if not self.return_pooled and self.legacy:
            return z
        if self.return_pooled:
            assert not self.legacy
            return z[self.layer], z["pooled"]
        return z[self.layer]

    def encode_with_transformer(self, text):
        x = self.model.token_embedding(text)
        x = x + self.model.positional_embedding
        x = x.permute(1, 0, 2)
        x = self.text_transformer_forward(x, attn_mask=self.model.attn_mask)
        if self.legacy:
            return self.model.ln_final(x[self.layer])
        o = self.model.ln_final(x["last"])
        x["pooled"] = self.pool(o, text)
        return x

    def pool(self, x, text):
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.model.text_projection

    def text_transformer_forward(self, x, attn_mask=None):
        outputs = {}
        for i, r in enumerate(self.model.transformer.resblocks):
            if i == len(self.model.transformer.resblocks) - 1:
                outputs["penultimate"] = x.permute(1, 0, 2)
            x = r(x, attn_mask=attn_mask)
        outputs["last"] = x.permute(1, 0, 2)
        return outputs

    def encode(self, text):
        return self(text)


def timestep_embedding(timesteps, dim, max_period=10000):
    """sgm/ldm ``timestep_embedding`` (cos first, then sin)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class Timestep(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)


class ConcatTimestepEmbedderND(AbstractEmbModel):
    """sgm: embeds each number of a (B, d) tensor and concatenates -> (B, d * outdim)."""

    def __init__(self, outdim):
        super().__init__()
        self.timestep = Timestep(outdim)
        self.outdim = outdim

    def forward(self, x):
        if x.ndim == 1:
            x = x[:, None]
        assert len(x.shape) == 2
        b, dims = x.shape[0], x.shape[1]
        emb = self.timestep(x.reshape(b * dims))
        return emb.reshape(b, dims * self.outdim)


class GeneralConditioner(nn.Module):
    """sgm's conditioner, with its ``no_grad`` around non-trainable embedders."""

    OUTPUT_DIM2KEYS = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
    KEY2CATDIM = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(self, emb_models):
        super().__init__()
        embedders = []
        for embedder, config in emb_models:
            embedder.is_trainable = config.get("is_trainable", False)
            embedder.ucg_rate = config.get("ucg_rate", 0.0)
            if not embedder.is_trainable:
                embedder.train = disabled_train.__get__(embedder)
                for param in embedder.parameters():
                    param.requires_grad = False
                embedder.eval()
            embedder.input_key = config["input_key"]
            embedder.legacy_ucg_val = config.get("legacy_ucg_value", None)
            embedders.append(embedder)
        self.embedders = nn.ModuleList(embedders)

    def forward(self, batch, force_zero_embeddings=None):
        from contextlib import nullcontext

        output = dict()
        if force_zero_embeddings is None:
            force_zero_embeddings = []
        for embedder in self.embedders:
            embedding_context = nullcontext if embedder.is_trainable else torch.no_grad
            with embedding_context():
                emb_out = embedder(batch[embedder.input_key])
            assert isinstance(emb_out, (torch.Tensor, list, tuple))
            if not isinstance(emb_out, (list, tuple)):
                emb_out = [emb_out]
            for emb in emb_out:
                out_key = self.OUTPUT_DIM2KEYS[emb.dim()]
                if embedder.input_key in force_zero_embeddings:
                    emb = torch.zeros_like(emb)
                if out_key in output:
                    output[out_key] = torch.cat((output[out_key], emb), self.KEY2CATDIM[out_key])
                else:
                    output[out_key] = emb
        return output


# ---------------------------------------------------------------- VAE
class DiagonalGaussianDistribution:
    """ldm.modules.distributions.distributions.DiagonalGaussianDistribution."""

    def __init__(self, parameters, deterministic=False):
        self.parameters = parameters
        self.mean, self.logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(self.logvar, -30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)
        if self.deterministic:
            self.var = self.std = torch.zeros_like(self.mean).to(device=self.parameters.device)

    def sample(self):
        return self.mean + self.std * torch.randn(self.mean.shape).to(device=self.parameters.device)

    def mode(self):
        return self.mean


class AutoencoderKL(nn.Module):
    """ldm's first stage: ``encoder``, ``decoder``, ``quant_conv``, ``post_quant_conv``."""

    def __init__(self):
        super().__init__()
        from diffusers import AutoencoderKL as DiffusersVAE

        vae = DiffusersVAE(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32] * 4,
                           layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=64)
        self.encoder = vae.encoder
        self.decoder = vae.decoder
        self.quant_conv = vae.quant_conv
        self.post_quant_conv = vae.post_quant_conv

    def encode(self, x):
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


class AutoencoderKLInferenceWrapper(AutoencoderKL):
    """sgm's first stage: ``encode`` returns a sample."""

    def encode(self, x):
        return super().encode(x).sample()


# ---------------------------------------------------------------- UNet
class UNetModel(nn.Module):
    """ldm/sgm ``openaimodel.UNetModel`` interface around a tiny diffusers UNet."""

    def __init__(self, in_channels=4, context_dim=CLIP_L_WIDTH, adm_in_channels=None, use_linear=False):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.in_channels = in_channels
        self.out_channels = 4
        self.num_classes = "sequential" if adm_in_channels else None
        self.dtype = torch.float32
        extra = {"class_embed_type": "projection", "projection_class_embeddings_input_dim": adm_in_channels} \
            if adm_in_channels else {}
        self.unet = UNet2DConditionModel(
            sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            norm_num_groups=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
            cross_attention_dim=context_dim, use_linear_projection=use_linear, **extra,
        )

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        assert (y is not None) == (self.num_classes is not None), \
            "must specify y if and only if the model is class-conditional"
        return self.unet(x, timesteps, encoder_hidden_states=context, class_labels=y).sample


class DiffusionWrapper(nn.Module):
    """ldm's ``DiffusionWrapper``: ``forward(x, t, c_concat=None, c_crossattn=None, c_adm=None)``."""

    def __init__(self, diffusion_model, conditioning_key):
        super().__init__()
        self.sequential_cross_attn = False
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key

    def forward(self, x, t, c_concat: list = None, c_crossattn: list = None, c_adm=None):
        if self.conditioning_key == "crossattn":
            return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))
        if self.conditioning_key == "hybrid":
            xc = torch.cat([x] + c_concat, dim=1)
            return self.diffusion_model(xc, t, context=torch.cat(c_crossattn, 1))
        if self.conditioning_key == "concat":
            return self.diffusion_model(torch.cat([x] + c_concat, dim=1), t)
        raise NotImplementedError(self.conditioning_key)


class OpenAIWrapper(nn.Module):
    """sgm's ``OpenAIWrapper``: ``forward(x, t, c: dict)``."""

    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x, t, c: dict, **kwargs):
        x = torch.cat((x, c.get("concat", torch.Tensor([]).type_as(x))), dim=1)
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn", None), y=c.get("vector", None), **kwargs)


def _ddpm_schedule(timesteps=1000, linear_start=0.00085, linear_end=0.012):
    betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    return betas, torch.cumprod(1.0 - betas, dim=0)


# ---------------------------------------------------------------- whole models
class LatentDiffusion(nn.Module):
    """ldm's ``LatentDiffusion`` as A1111 uses it (SD1, SD2, SD1 inpainting)."""

    def __init__(self, unet, cond_stage_model, first_stage_model, parameterization="eps",
                 conditioning_key="crossattn", scale_factor=0.18215, timesteps=1000):
        super().__init__()
        self.parameterization = parameterization
        self.model = DiffusionWrapper(unet, conditioning_key)
        self.first_stage_model = freeze(first_stage_model)
        self.cond_stage_model = freeze(cond_stage_model)
        self.cond_stage_key = "txt"
        self.cond_stage_forward = None
        self.cond_stage_trainable = False
        self.scale_factor = scale_factor
        self.num_timesteps = timesteps
        self.loss_type = "l2"
        self.l_simple_weight = 1.0
        self.original_elbo_weight = 0.0
        betas, alphas_cumprod = _ddpm_schedule(timesteps)
        to_torch = lambda x: x.clone().to(torch.float32)  # noqa: E731
        self.register_buffer("betas", to_torch(betas))
        self.register_buffer("alphas_cumprod", to_torch(alphas_cumprod))
        self.register_buffer("sqrt_alphas_cumprod", to_torch(alphas_cumprod.sqrt()))
        self.register_buffer("sqrt_one_minus_alphas_cumprod", to_torch((1.0 - alphas_cumprod).sqrt()))
        self.logvar = torch.full(fill_value=0.0, size=(timesteps,))

    @property
    def device(self):
        return next(self.parameters()).device

    def get_learned_conditioning(self, c):
        if self.cond_stage_forward is None:
            if hasattr(self.cond_stage_model, "encode") and callable(self.cond_stage_model.encode):
                c = self.cond_stage_model.encode(c)
                if isinstance(c, DiagonalGaussianDistribution):
                    c = c.mode()
            else:
                c = self.cond_stage_model(c)
        else:
            c = getattr(self.cond_stage_model, self.cond_stage_forward)(c)
        return c

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        if not isinstance(cond, dict):
            if not isinstance(cond, list):
                cond = [cond]
            key = "c_concat" if self.model.conditioning_key == "concat" else "c_crossattn"
            cond = {key: cond}
        x_recon = self.model(x_noisy, t, **cond)
        if isinstance(x_recon, tuple) and not return_ids:
            return x_recon[0]
        return x_recon

    @torch.no_grad()
    def encode_first_stage(self, x):
        return self.first_stage_model.encode(x)

    def get_first_stage_encoding(self, encoder_posterior):
        if isinstance(encoder_posterior, DiagonalGaussianDistribution):
            z = encoder_posterior.sample()
        elif isinstance(encoder_posterior, torch.Tensor):
            z = encoder_posterior
        else:
            raise NotImplementedError(f"encoder_posterior of type '{type(encoder_posterior)}' not yet implemented")
        return self.scale_factor * z

    @torch.no_grad()
    def decode_first_stage(self, z):
        return self.first_stage_model.decode(1.0 / self.scale_factor * z)

    @staticmethod
    def _extract(a, t, shape):
        out = a.gather(-1, t)
        return out.reshape(t.shape[0], *((1,) * (len(shape) - 1)))

    def q_sample(self, x_start, t, noise=None):
        noise = torch.randn_like(x_start) if noise is None else noise
        return (self._extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def get_v(self, x, noise, t):
        return (self._extract(self.sqrt_alphas_cumprod, t, x.shape) * noise
                - self._extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape) * x)

    def get_loss(self, pred, target, mean=True):
        if mean:
            return torch.nn.functional.mse_loss(target, pred)
        return torch.nn.functional.mse_loss(target, pred, reduction="none")

    def p_losses(self, x_start, cond, t, noise=None):
        noise = torch.randn_like(x_start) if noise is None else noise
        x_noisy = self.q_sample(x_start=x_start, t=t, noise=noise)
        model_output = self.apply_model(x_noisy, t, cond)
        target = noise if self.parameterization == "eps" else self.get_v(x_start, noise, t)
        loss_simple = self.get_loss(model_output, target, mean=False).mean([1, 2, 3])
        logvar_t = self.logvar[t.cpu()].to(x_start.device)
        loss = self.l_simple_weight * (loss_simple / torch.exp(logvar_t) + logvar_t).mean()
        return loss, {"train/loss_simple": loss_simple.mean(), "train/loss": loss}

    def forward(self, x, c, *args, **kwargs):
        t = torch.randint(0, self.num_timesteps, (x.shape[0],), device=x.device).long()
        return self.p_losses(x, c, t, *args, **kwargs)


class EpsScaling:
    def __call__(self, sigma):
        return torch.ones_like(sigma), -sigma, 1 / (sigma ** 2 + 1.0) ** 0.5, sigma.clone()


class VScaling:
    def __call__(self, sigma):
        return (1.0 / (sigma ** 2 + 1.0), -sigma / (sigma ** 2 + 1.0) ** 0.5, 1.0 / (sigma ** 2 + 1.0) ** 0.5,
                sigma.clone())


class DiscreteDenoiser(nn.Module):
    """sgm's denoiser: only what A1111 reads (``scaling``, ``sigmas``)."""

    def __init__(self, scaling, num_idx=1000):
        super().__init__()
        self.scaling = scaling
        _, alphas_cumprod = _ddpm_schedule(num_idx)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.register_buffer("sigmas", sigmas.to(torch.float32))


class DiffusionEngine(nn.Module):
    """sgm's ``DiffusionEngine`` (SDXL base / refiner); A1111's ``sd_models_xl`` adds the rest."""

    def __init__(self, unet, conditioner, first_stage_model, scale_factor=0.13025, v_prediction=False):
        super().__init__()
        self.input_key = "jpg"
        self.model = OpenAIWrapper(unet)
        self.denoiser = DiscreteDenoiser(VScaling() if v_prediction else EpsScaling())
        self.conditioner = conditioner
        self.first_stage_model = freeze(first_stage_model)
        self.scale_factor = scale_factor
        self.disable_first_stage_autocast = True
        self.loss_fn = None

    @torch.no_grad()
    def encode_first_stage(self, x):
        z = self.first_stage_model.encode(x)
        return self.scale_factor * z

    @torch.no_grad()
    def decode_first_stage(self, z):
        return self.first_stage_model.decode(1.0 / self.scale_factor * z)


# ---------------------------------------------------------------- builders
def build(kind: str, seed: int = 0) -> nn.Module:
    """A freshly initialised tiny model of ``kind`` (deterministic for a seed), before A1111's hijack."""
    if kind not in KINDS:
        raise ValueError(f"unknown stand-in model {kind!r}; choose one of {', '.join(KINDS)}")
    torch.manual_seed(seed)
    if kind in ("sd1", "sd1-inpaint"):
        inpaint = kind == "sd1-inpaint"
        unet = UNetModel(in_channels=9 if inpaint else 4, context_dim=CLIP_L_WIDTH)
        model = LatentDiffusion(unet, FrozenCLIPEmbedder(), AutoencoderKL(),
                                conditioning_key="hybrid" if inpaint else "crossattn")
    elif kind == "sd2":
        unet = UNetModel(context_dim=OPENCLIP_WIDTH, use_linear=True)
        model = LatentDiffusion(unet, FrozenOpenCLIPEmbedder(), AutoencoderKL(), parameterization="v")
    else:
        sizes = ["original_size_as_tuple", "crop_coords_top_left"]
        emb_models = []
        if kind == "sdxl":
            emb_models.append((FrozenCLIPEmbedder(layer="hidden", layer_idx=1), {"input_key": "txt"}))
        emb_models.append((FrozenOpenCLIPEmbedder2(), {"input_key": "txt"}))
        if kind == "sdxl":
            sizes.append("target_size_as_tuple")
        for key in sizes:
            emb_models.append((ConcatTimestepEmbedderND(SIZE_EMBED_DIM), {"input_key": key}))
        if kind == "sdxl-refiner":
            emb_models.append((ConcatTimestepEmbedderND(SIZE_EMBED_DIM), {"input_key": "aesthetic_score"}))
        conditioner = GeneralConditioner(emb_models)
        context = (CLIP_L_WIDTH if kind == "sdxl" else 0) + OPENCLIP_WIDTH
        adm = OPENCLIP_WIDTH + 2 * SIZE_EMBED_DIM * len(sizes) + (SIZE_EMBED_DIM if kind == "sdxl-refiner" else 0)
        unet = UNetModel(context_dim=context, adm_in_channels=adm, use_linear=True)
        model = DiffusionEngine(unet, conditioner, AutoencoderKLInferenceWrapper())
    return model
