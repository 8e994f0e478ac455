"""``backend.attention``: the attention functions and the one picked at import (``attention_function``).

Real Forge picks xformers / Sage / flash / PyTorch / split by flags and what
is installed. The stand-in picks ``attention_sage`` by default
(``FORGE_STANDIN_ATTENTION=sage``): a kernel with no backward, as Sage or
flash-attn wrappers can be, so a run that forgets to swap in
``attention_pytorch`` fails its backward pass.
"""

import torch

from backend.args import args


def _split_heads(q, k, v, heads, skip_reshape):
    if skip_reshape:
        return q, k, v, q.shape[0], q.shape[-1]
    b, _, dim = q.shape
    dim_head = dim // heads
    q, k, v = (t.view(b, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    return q, k, v, b, dim_head


def attention_basic(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                    **kwargs):
    q, k, v, b, dim_head = _split_heads(q, k, v, heads, skip_reshape)
    weights = (q @ k.transpose(-1, -2)) * dim_head ** -0.5
    if mask is not None:
        weights = weights + mask
    out = weights.softmax(dim=-1) @ v
    return out if skip_output_reshape else out.transpose(1, 2).reshape(b, -1, heads * dim_head)


def attention_pytorch(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                      **kwargs):
    q, k, v, b, dim_head = _split_heads(q, k, v, heads, skip_reshape)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out if skip_output_reshape else out.transpose(1, 2).reshape(b, -1, heads * dim_head)


class _NoBackwardKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, heads):
        with torch.no_grad():
            return attention_basic(q, k, v, heads)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("attention_sage: this kernel has no backward pass")


def attention_sage(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                   **kwargs):
    return _NoBackwardKernel.apply(q, k, v, heads)


if args.attention == "sage":
    print("Using sage attention")
    attention_function = attention_sage
else:
    print("Using pytorch attention")
    attention_function = attention_pytorch
