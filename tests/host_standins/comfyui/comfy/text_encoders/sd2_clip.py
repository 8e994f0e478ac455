"""``comfy.text_encoders.sd2_clip``: SD2's OpenCLIP-H text encoder as ``clip_h``.

As in ComfyUI: ``SD2ClipHModel`` is an ``SDClipModel`` on the penultimate layer (with the final
norm), pad token 0, projected pooled output; ``SD2Tokenizer`` / ``SD2ClipModel`` are the SD1
classes with clip name "h" (key "clip_h", width 1024, padded with 0).
"""

from comfy import sd1_clip

#: The real OpenCLIP-H text config (sd2_clip_config.json); tests shrink it through model_options.
SD2_CLIP_CONFIG = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "max_position_embeddings": 77, "hidden_act": "gelu", "eos_token_id": 49407, "projection_dim": 1024}


class SD2ClipHModel(sd1_clip.SDClipModel):
    def __init__(self, arch="ViT-H-14", device="cpu", max_length=77, freeze=True, layer="penultimate", layer_idx=None,
                 dtype=None, model_options={}):
        if layer == "penultimate":
            layer, layer_idx = "hidden", -2
        super().__init__(device=device, freeze=freeze, layer=layer, layer_idx=layer_idx,
                         textmodel_json_config=SD2_CLIP_CONFIG, dtype=dtype,
                         special_tokens={"start": 49406, "end": 49407, "pad": 0}, return_projected_pooled=True,
                         model_options=model_options)


class SD2ClipHTokenizer(sd1_clip.SDTokenizer):
    def __init__(self, tokenizer_path=None, embedding_directory=None, tokenizer_data={}):
        super().__init__(tokenizer_path, pad_with_end=False, embedding_directory=embedding_directory,
                         embedding_size=1024, embedding_key="clip_h", tokenizer_data=tokenizer_data)


class SD2Tokenizer(sd1_clip.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, clip_name="h",
                         tokenizer=SD2ClipHTokenizer)


class SD2ClipModel(sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        super().__init__(device=device, dtype=dtype, model_options=model_options, clip_name="h",
                         clip_model=SD2ClipHModel, **kwargs)
