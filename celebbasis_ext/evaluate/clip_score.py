"""Prompt scores: CLIP's cosine similarity between a render and its prompt (without the token).

``load_prompt_scorer(spec)`` takes a transformers CLIP model (a folder with
``CLIPModel`` weights and a ``CLIPProcessor``, or a Hugging Face hub id such
as ``openai/clip-vit-base-patch32``), or an open_clip model written
``open_clip:ARCH[:PRETRAINED]`` (e.g. ``open_clip:ViT-B-32:laion2b_s34b_b79k``),
or "none" (no prompt score). The score is the plain cosine of the projected
image and text features, the number the paper's table reports (0.268 for
Celeb Basis), not CLIPScore's rescaled 2.5 x max(cos, 0).
"""

from __future__ import annotations

import os
import re
from typing import Optional

from ..errors import BadInput

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
OPEN_CLIP_PREFIX = "open_clip:"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


class TransformersClip:
    """A transformers ``CLIPModel`` + ``CLIPProcessor``: image and text features through the projections."""

    def __init__(self, source: str, device: str = "cpu"):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.name = source
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(source).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(source)
        self.max_length = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))

    def score(self, image, text: str) -> float:
        import torch

        inputs = self.processor(text=[text], images=[image.convert("RGB")], return_tensors="pt", padding=True,
                                truncation=True, max_length=self.max_length)
        with torch.no_grad():
            model = self.model
            pixels = inputs["pixel_values"].to(self.device, model.dtype)
            image_features = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
            ids = inputs["input_ids"].to(self.device)
            mask = inputs.get("attention_mask")
            text_out = model.text_model(input_ids=ids, attention_mask=None if mask is None else mask.to(self.device))
            text_features = model.text_projection(text_out.pooler_output)
            cosine = torch.nn.functional.cosine_similarity(image_features.float(), text_features.float())
        return round(float(cosine[0]), 4)


class OpenClip:
    """An open_clip model: ``create_model_and_transforms(arch, pretrained=...)`` and its tokenizer."""

    def __init__(self, spec: str, device: str = "cpu"):
        import torch

        try:
            import open_clip
        except Exception as error:  # noqa: BLE001 - open_clip imports torchvision
            raise BadInput(f"open_clip cannot be imported ({_first_line(error)}): pip install open_clip_torch, "
                           "or give a transformers CLIP model to --clip") from None
        rest = spec[len(OPEN_CLIP_PREFIX):]
        if rest.startswith("hf-hub:"):
            arch, pretrained = rest, None
        else:
            arch, _, pretrained = rest.partition(":")
        if not arch:
            raise BadInput("write an open_clip model as open_clip:ARCH[:PRETRAINED], e.g. "
                           "open_clip:ViT-B-32:laion2b_s34b_b79k")
        self.name = spec
        self.device = torch.device(device)
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)

    def score(self, image, text: str) -> float:
        import torch

        with torch.no_grad():
            pixels = self.preprocess(image.convert("RGB")).unsqueeze(0).to(self.device)
            image_features = self.model.encode_image(pixels)
            text_features = self.model.encode_text(self.tokenizer([text]).to(self.device))
            cosine = torch.nn.functional.cosine_similarity(image_features.float(), text_features.float())
        return round(float(cosine[0]), 4)


def load_prompt_scorer(spec: Optional[str], device: str = "cpu"):
    """The prompt scorer for ``spec`` (see the module docstring), or None for "none"/empty."""
    spec = (spec or "").strip()
    if spec.lower() in ("", "none"):
        return None
    if spec.startswith(OPEN_CLIP_PREFIX):
        try:
            return OpenClip(spec, device)
        except BadInput:
            raise
        except Exception as error:  # noqa: BLE001 - unknown model, no download: one line
            raise BadInput(f"cannot load the CLIP model {spec}: {_first_line(error)}") from None
    folder = os.path.expanduser(spec)
    if not os.path.isdir(folder) and not HUB_ID.match(spec):
        raise BadInput(f"no CLIP model folder at {spec}: give a transformers CLIP folder or hub id "
                       f"(e.g. {DEFAULT_CLIP}), open_clip:ARCH:PRETRAINED, or none")
    try:
        return TransformersClip(folder if os.path.isdir(folder) else spec, device)
    except Exception as error:  # noqa: BLE001 - offline, not a CLIP model, ...: one line
        raise BadInput(f"cannot load the CLIP model {spec}: {_first_line(error)} (give a transformers CLIP "
                       f"folder or hub id such as {DEFAULT_CLIP}, open_clip:ARCH:PRETRAINED, or none)") from None
