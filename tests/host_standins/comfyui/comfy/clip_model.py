"""``comfy.clip_model``: ComfyUI's own CLIP text transformer (the keys of transformers' CLIPTextModel).

As in ComfyUI: ``CLIPLayer.forward`` adds its residuals in place (``x += self_attn(...)``,
``x += mlp(...)``); ``CLIPTextModel_.forward(input_tokens=None, attention_mask=None, embeds=None,
num_tokens=None, intermediate_output=None, final_layer_norm_intermediate=True, dtype=torch.float32,
embeds_info=[])`` adds the position embedding to ``embeds``, applies the causal mask, returns
(last hidden state after the final norm, the intermediate layer's output, pooled at
``num_tokens - 1``); ``CLIPTextModel`` adds ``text_projection`` and returns
``(x, intermediate, projected_pooled, pooled)``.
"""

import torch

import comfy.ops
from comfy.ldm.modules.attention import optimized_attention_for_device

ACTIVATIONS = {"quick_gelu": lambda a: a * torch.sigmoid(1.702 * a), "gelu": torch.nn.functional.gelu}


class CLIPAttention(torch.nn.Module):
    def __init__(self, embed_dim, heads, dtype, device, operations):
        super().__init__()
        self.heads = heads
        self.q_proj = operations.Linear(embed_dim, embed_dim, bias=True, dtype=dtype, device=device)
        self.k_proj = operations.Linear(embed_dim, embed_dim, bias=True, dtype=dtype, device=device)
        self.v_proj = operations.Linear(embed_dim, embed_dim, bias=True, dtype=dtype, device=device)
        self.out_proj = operations.Linear(embed_dim, embed_dim, bias=True, dtype=dtype, device=device)

    def forward(self, x, mask=None, optimized_attention=None):
        out = optimized_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask)
        return self.out_proj(out)


class CLIPMLP(torch.nn.Module):
    def __init__(self, embed_dim, intermediate_size, activation, dtype, device, operations):
        super().__init__()
        self.fc1 = operations.Linear(embed_dim, intermediate_size, bias=True, dtype=dtype, device=device)
        self.activation = ACTIVATIONS[activation]
        self.fc2 = operations.Linear(intermediate_size, embed_dim, bias=True, dtype=dtype, device=device)

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class CLIPLayer(torch.nn.Module):
    def __init__(self, embed_dim, heads, intermediate_size, activation, dtype, device, operations):
        super().__init__()
        self.layer_norm1 = operations.LayerNorm(embed_dim, dtype=dtype, device=device)
        self.self_attn = CLIPAttention(embed_dim, heads, dtype, device, operations)
        self.layer_norm2 = operations.LayerNorm(embed_dim, dtype=dtype, device=device)
        self.mlp = CLIPMLP(embed_dim, intermediate_size, activation, dtype, device, operations)

    def forward(self, x, mask=None, optimized_attention=None):
        x += self.self_attn(self.layer_norm1(x), mask, optimized_attention)
        x += self.mlp(self.layer_norm2(x))
        return x


class CLIPEncoder(torch.nn.Module):
    def __init__(self, num_layers, embed_dim, heads, intermediate_size, activation, dtype, device, operations):
        super().__init__()
        self.layers = torch.nn.ModuleList([CLIPLayer(embed_dim, heads, intermediate_size, activation, dtype, device,
                                                     operations) for _ in range(num_layers)])

    def forward(self, x, mask=None, intermediate_output=None):
        attention = optimized_attention_for_device(x.device, mask=mask is not None, small_input=True)
        if intermediate_output is not None and intermediate_output < 0:
            intermediate_output = len(self.layers) + intermediate_output
        intermediate = None
        for index, layer in enumerate(self.layers):
            x = layer(x, mask, attention)
            if index == intermediate_output:
                intermediate = x.clone()
        return x, intermediate


class CLIPEmbeddings(torch.nn.Module):
    def __init__(self, embed_dim, vocab_size=49408, num_positions=77, dtype=None, device=None, operations=None):
        super().__init__()
        self.token_embedding = operations.Embedding(vocab_size, embed_dim, dtype=dtype, device=device)
        self.position_embedding = operations.Embedding(num_positions, embed_dim, dtype=dtype, device=device)


class CLIPTextModel_(torch.nn.Module):
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        embed_dim = config["hidden_size"]
        self.eos_token_id = config["eos_token_id"]
        self.embeddings = CLIPEmbeddings(embed_dim, num_positions=config["max_position_embeddings"], dtype=dtype,
                                         device=device, operations=operations)
        self.encoder = CLIPEncoder(config["num_hidden_layers"], embed_dim, config["num_attention_heads"],
                                   config["intermediate_size"], config["hidden_act"], dtype, device, operations)
        self.final_layer_norm = operations.LayerNorm(embed_dim, dtype=dtype, device=device)

    def forward(self, input_tokens=None, attention_mask=None, embeds=None, num_tokens=None, intermediate_output=None,
                final_layer_norm_intermediate=True, dtype=torch.float32, embeds_info=[]):
        x = embeds + comfy.ops.cast_to(self.embeddings.position_embedding.weight, dtype=dtype, device=embeds.device)
        mask = torch.full((x.shape[1], x.shape[1]), -torch.finfo(x.dtype).max, dtype=x.dtype, device=x.device).triu_(1)
        x, intermediate = self.encoder(x, mask=mask, intermediate_output=intermediate_output)
        x = self.final_layer_norm(x)
        if intermediate is not None and final_layer_norm_intermediate:
            intermediate = self.final_layer_norm(intermediate)
        pooled = x[list(range(x.shape[0])), [count - 1 for count in num_tokens]]
        return x, intermediate, pooled


class CLIPTextModel(torch.nn.Module):
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        self.num_layers = config["num_hidden_layers"]
        self.text_model = CLIPTextModel_(config, dtype, device, operations)
        width = config["hidden_size"]
        self.text_projection = operations.Linear(width, config.get("projection_dim", width), bias=False, dtype=dtype,
                                                 device=device)
        self.dtype = dtype

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def forward(self, *args, **kwargs):
        x = self.text_model(*args, **kwargs)
        return x[0], x[1], self.text_projection(x[2]), x[2]
