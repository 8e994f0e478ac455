"""``modules.prompt_parser_diffusers`` of SD.Next, reduced: prompt embeds through the pipeline's own
tokenizers and text encoders, with embedding names expanded to their tokens (``name name_1``) and a
module-level ``cache`` keyed by the prompt text (cleared by SD.Next when it reloads a model)."""

from collections import OrderedDict

import torch

from modules import shared

cache = OrderedDict()


def _expand(prompt, pipe):
    database = getattr(pipe, "embedding_db", None)
    for name, embedding in (database.word_embeddings.items() if database else ()):
        prompt = prompt.replace(name, " ".join(embedding.tokens))
    return prompt


@torch.no_grad()
def encode_prompt(prompt):
    """(prompt_embeds, pooled) for one prompt, as the diffusers pipelines build them."""
    pipe = shared.sd_model
    if prompt in cache:
        return cache[prompt]
    text = _expand(prompt, pipe)
    xl = getattr(pipe, "text_encoder_2", None) is not None
    hidden, pooled = [], None
    pairs = ((pipe.text_encoder, pipe.tokenizer),
             (getattr(pipe, "text_encoder_2", None), getattr(pipe, "tokenizer_2", None)))
    for encoder, tokenizer in pairs:
        if encoder is None:
            continue
        ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        out = encoder(ids.to(encoder.device), output_hidden_states=xl)
        hidden.append(out.hidden_states[-2] if xl else out[0])
        pooled = out[0] if xl else None
    database = getattr(pipe, "embedding_db", None)
    if database is not None:
        database.embeddings_used = [name for name in database.word_embeddings if name in prompt]
    cache[prompt] = (torch.cat(hidden, dim=-1), pooled)
    return cache[prompt]
