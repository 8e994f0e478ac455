"""A tiny random-weight CLIP (transformers ``CLIPModel`` + ``CLIPProcessor``) saved to a folder.

The real architecture and the real BPE tokenizer, small sizes, no download:
what ``--clip FOLDER`` loads in the evaluation tests.
"""

from __future__ import annotations

from pathlib import Path


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from celebbasis_ext.clip_tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    text = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
            "num_hidden_layers": 2, "max_position_embeddings": 77, "eos_token_id": 49407, "bos_token_id": 49406,
            "pad_token_id": 49407}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
              "image_size": 32, "patch_size": 8}
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=clip_tokenizer())
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
