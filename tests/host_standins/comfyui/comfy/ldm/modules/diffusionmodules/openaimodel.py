"""``comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel``, as a tiny diffusers UNet inside.

What the nodes rely on is as in ComfyUI: ``forward(x, timesteps=None, context=None, y=None,
control=None, transformer_options={}, **kwargs)`` with timesteps in the DDPM convention (0-999),
``y`` the SDXL vector (pooled text + size embeddings, fed to ``label_emb``, here the diffusers
``add_embedding``), ``transformer_options`` written to during the call (``original_shape``) and
handed to every attention call, which goes through ``optimized_attention`` of
``comfy.ldm.modules.attention`` (and so through ``optimized_attention_override``);
``in_channels`` and ``dtype`` attributes. The layers themselves are diffusers' (tiny widths):
ComfyUI builds its own ldm-layout UNet, which these tests do not need.
"""

import torch

from comfy.ldm.modules import attention


class _ComfyAttention:
    """A diffusers attention processor that calls ComfyUI's attention function."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 transformer_options=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        out = attention.optimized_attention(q, k, v, attn.heads, transformer_options=transformer_options or {})
        return attn.to_out[1](attn.to_out[0](out))


class UNetModel(torch.nn.Module):
    def __init__(self, diffusers_config=None, dtype=None, device=None, operations=None, **kwargs):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.unet = UNet2DConditionModel.from_config(diffusers_config)
        self.unet.set_attn_processor(_ComfyAttention())
        self.in_channels = diffusers_config["in_channels"]
        self.out_channels = diffusers_config["out_channels"]
        self._y = None
        if getattr(self.unet, "add_embedding", None) is not None:
            self.unet.add_embedding.register_forward_pre_hook(self._label_embedding_input)

    @property
    def dtype(self):
        return next(self.unet.parameters()).dtype

    def _label_embedding_input(self, module, args):
        return (self._y.to(args[0].dtype),) if self._y is not None else None

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        extra = None
        if y is not None:  # diffusers wants the pieces; the hook above feeds y itself to the label embedding
            batch = x.shape[0]
            width = self.unet.config.projection_class_embeddings_input_dim - 6 * self.unet.config.addition_time_embed_dim
            extra = {"text_embeds": y[:, :width], "time_ids": torch.zeros(batch, 6, device=x.device, dtype=x.dtype)}
        self._y = y
        try:
            return self.unet(x, timesteps, encoder_hidden_states=context, added_cond_kwargs=extra,
                             cross_attention_kwargs={"transformer_options": transformer_options}).sample
        finally:
            self._y = None


def timestep_embedding(timesteps, dim, max_period=10000):
    """[cos, sin] sinusoidal embedding of (fractional) timesteps, as ``diffusionmodules.util``'s."""
    import math

    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Timestep(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)
