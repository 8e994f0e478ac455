"""``comfy.ops``: layer classes whose weights may be cast at each call.

As in ComfyUI: ``disable_weight_init.<Layer>`` uses its weights as they are unless
``comfy_cast_weights`` is set (or weight functions are attached); ``manual_cast.<Layer>`` always
casts them to the input's dtype and device through ``model_management.cast_to``, which hands back
the weight tensor itself when nothing changes. ``Embedding.forward(input, out_dtype=None)``.
Only the layers the stand-in's text encoder uses are here.
"""

import torch

from comfy import model_management

cast_to = model_management.cast_to


def cast_bias_weight(s, input=None, dtype=None, device=None, bias_dtype=None):
    if input is not None:
        dtype = input.dtype if dtype is None else dtype
        bias_dtype = dtype if bias_dtype is None else bias_dtype
        device = input.device if device is None else device
    bias = None
    if s.bias is not None:
        bias = cast_to(s.bias, bias_dtype, device, copy=len(s.bias_function) > 0)
        for function in s.bias_function:
            bias = function(bias)
    weight = cast_to(s.weight, dtype, device, copy=len(s.weight_function) > 0)
    for function in s.weight_function:
        weight = function(weight)
    return weight, bias


class CastWeightBiasOp:
    comfy_cast_weights = False
    weight_function = []
    bias_function = []


class disable_weight_init:
    class Linear(torch.nn.Linear, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, *args, **kwargs):
            if self.comfy_cast_weights or self.weight_function or self.bias_function:
                weight, bias = cast_bias_weight(self, args[0])
                return torch.nn.functional.linear(args[0], weight, bias)
            return super().forward(*args, **kwargs)

    class LayerNorm(torch.nn.LayerNorm, CastWeightBiasOp):
        def reset_parameters(self):
            return None

        def forward(self, *args, **kwargs):
            if self.comfy_cast_weights or self.weight_function or self.bias_function:
                weight, bias = (cast_bias_weight(self, args[0]) if self.weight is not None else (None, None))
                return torch.nn.functional.layer_norm(args[0], self.normalized_shape, weight, bias, self.eps)
            return super().forward(*args, **kwargs)

    class Embedding(torch.nn.Embedding, CastWeightBiasOp):
        def reset_parameters(self):
            self.bias = None
            return None

        def forward(self, *args, **kwargs):
            if self.comfy_cast_weights or self.weight_function or self.bias_function:
                input, out_dtype = args[0], kwargs.get("out_dtype")
                output_dtype = out_dtype
                if self.weight.dtype in (torch.float16, torch.bfloat16):
                    out_dtype = None
                weight, _ = cast_bias_weight(self, device=input.device, dtype=out_dtype)
                return torch.nn.functional.embedding(input, weight, self.padding_idx).to(dtype=output_dtype)
            kwargs.pop("out_dtype", None)
            return super().forward(*args, **kwargs)


class manual_cast(disable_weight_init):
    class Linear(disable_weight_init.Linear):
        comfy_cast_weights = True

    class LayerNorm(disable_weight_init.LayerNorm):
        comfy_cast_weights = True

    class Embedding(disable_weight_init.Embedding):
        comfy_cast_weights = True
