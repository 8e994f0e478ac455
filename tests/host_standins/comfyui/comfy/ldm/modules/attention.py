"""``comfy.ldm.modules.attention``: the attention functions and the one ComfyUI picked at start.

As in ComfyUI: every function takes ``(q, k, v, heads, mask=None, attn_precision=None,
skip_reshape=False, skip_output_reshape=False, **kwargs)`` with q/k/v as (batch, tokens,
heads * dim) and is wrapped by ``wrap_attn``: when ``transformer_options`` (a keyword) holds
``optimized_attention_override``, that callable is called as ``override(func, *args, **kwargs)``
instead (with ``_inside_attn_wrapper=True`` in kwargs, so calling another wrapped function from
it runs that function directly). ``optimized_attention`` is chosen once at import: here
``$COMFY_STANDIN_ATTENTION`` = "pytorch" (default) or "sage", a stand-in of SageAttention's
kernel, which has no backward. ``optimized_attention_for_device`` (the CLIP text encoder's) gives
the PyTorch one.
"""

import functools
import os

import torch


def wrap_attn(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        remove_key = False
        try:
            if "_inside_attn_wrapper" not in kwargs:
                transformer_options = kwargs.get("transformer_options", None)
                remove_key = True
                kwargs["_inside_attn_wrapper"] = True
                if transformer_options is not None and "optimized_attention_override" in transformer_options:
                    return transformer_options["optimized_attention_override"](func, *args, **kwargs)
            return func(*args, **kwargs)
        finally:
            if remove_key:
                del kwargs["_inside_attn_wrapper"]
    return wrapper


def _split_heads(q, k, v, heads):
    b, _, inner = q.shape
    dim_head = inner // heads
    return [t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v)], b, dim_head


@wrap_attn
def attention_pytorch(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                      **kwargs):
    (q, k, v), b, dim_head = _split_heads(q, k, v, heads)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, -1, heads * dim_head)


class _SageKernel(torch.autograd.Function):
    """Forward only, like the SageAttention kernel ComfyUI calls with --use-sage-attention."""

    @staticmethod
    def forward(ctx, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("sageattn has no backward pass")


@wrap_attn
def attention_sage(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                   **kwargs):
    (q, k, v), b, dim_head = _split_heads(q, k, v, heads)
    return _SageKernel.apply(q, k, v).transpose(1, 2).reshape(b, -1, heads * dim_head)


_CHOICES = {"pytorch": attention_pytorch, "sage": attention_sage}
optimized_attention = _CHOICES[os.environ.get("COMFY_STANDIN_ATTENTION", "pytorch")]
optimized_attention_masked = optimized_attention


def optimized_attention_for_device(device, mask=False, small_input=False):
    return attention_pytorch
