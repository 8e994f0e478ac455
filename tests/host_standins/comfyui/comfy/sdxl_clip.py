"""``comfy.sdxl_clip``: SDXL's two text encoders.

As in ComfyUI: ``SDXLClipModel`` holds ``clip_l`` (an ``SDClipModel``, layer "hidden" -2, no final
norm on it) and ``clip_g`` (``SDXLClipG``: penultimate layer, pad token 0, projected pooled
output); ``encode_token_weights`` concatenates l and g along the width and returns g's pooled
output. ``SDXLTokenizer`` tokenizes for ``clip_l`` (key "clip_l", width 768) and ``clip_g`` (key
"clip_g", width 1280, padded with 0), returning ``{"g": ..., "l": ...}``.
"""

import torch

from comfy import sd1_clip

#: The real OpenCLIP bigG text config (clip_config_bigg.json); tests shrink it through model_options.
CLIP_G_CONFIG = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
                 "max_position_embeddings": 77, "hidden_act": "gelu", "eos_token_id": 49407, "projection_dim": 1280}


class SDXLClipG(sd1_clip.SDClipModel):
    def __init__(self, device="cpu", max_length=77, freeze=True, layer="penultimate", layer_idx=None, dtype=None,
                 model_options={}):
        if layer == "penultimate":
            layer, layer_idx = "hidden", -2
        model_options = {**model_options, "model_name": "clip_g"}
        super().__init__(device=device, freeze=freeze, layer=layer, layer_idx=layer_idx,
                         textmodel_json_config=CLIP_G_CONFIG, dtype=dtype,
                         special_tokens={"start": 49406, "end": 49407, "pad": 0}, layer_norm_hidden_state=False,
                         return_projected_pooled=True, model_options=model_options)


class SDXLClipGTokenizer(sd1_clip.SDTokenizer):
    def __init__(self, tokenizer_path=None, embedding_directory=None, tokenizer_data={}):
        super().__init__(tokenizer_path, pad_with_end=False, embedding_directory=embedding_directory,
                         embedding_size=1280, embedding_key="clip_g", tokenizer_data=tokenizer_data)


class SDXLTokenizer:
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        self.clip_l = sd1_clip.SDTokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)
        self.clip_g = SDXLClipGTokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        return {"g": self.clip_g.tokenize_with_weights(text, return_word_ids, **kwargs),
                "l": self.clip_l.tokenize_with_weights(text, return_word_ids, **kwargs)}

    def state_dict(self):
        return {}


class SDXLClipModel(torch.nn.Module):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__()
        self.clip_l = sd1_clip.SDClipModel(layer="hidden", layer_idx=-2, device=device, dtype=dtype,
                                           layer_norm_hidden_state=False, model_options=model_options)
        self.clip_g = SDXLClipG(device=device, dtype=dtype, model_options=model_options)
        self.dtypes = {dtype}

    def set_clip_options(self, options):
        self.clip_l.set_clip_options(options)
        self.clip_g.set_clip_options(options)

    def reset_clip_options(self):
        self.clip_g.reset_clip_options()
        self.clip_l.reset_clip_options()

    def encode_token_weights(self, token_weight_pairs):
        g_out, g_pooled = self.clip_g.encode_token_weights(token_weight_pairs["g"])
        l_out, _ = self.clip_l.encode_token_weights(token_weight_pairs["l"])
        cut_to = min(l_out.shape[1], g_out.shape[1])
        return torch.cat([l_out[:, :cut_to], g_out[:, :cut_to]], dim=-1), g_pooled

    def load_sd(self, sd):
        return self.clip_l.load_sd(sd)
