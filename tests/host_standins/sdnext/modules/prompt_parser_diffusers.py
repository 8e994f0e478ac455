"""``modules.prompt_parser_diffusers`` of SD.Next, reduced: prompt embeds through the pipeline's own
tokenizers and text encoders, and a module-level ``cache`` keyed by the prompt text (cleared by SD.Next
when it reloads a model).

As in SD.Next's ``DiffusersTextualInversionManager``, embeddings are found by
the tokenizer, not by the database: every added token in the tokenized prompt
is expanded to ``token token_1 ...`` and listed in ``embeddings_used``. So a
name whose file was deleted keeps working while its tokens stay in the
tokenizer, and an added token also matches inside a longer word (``annx`` ->
``ann`` + ``x``), as added tokens are not ``single_word``.
"""

from collections import OrderedDict

import torch

from modules import shared

cache = OrderedDict()


def _expand(prompt, tokenizer, used):
    added = tokenizer.added_tokens_encoder
    for token in set(tokenizer.tokenize(prompt)):
        if token in added:
            used.append(token)
            replacement, i = token, 1
            while f"{token}_{i}" in added:
                replacement += f" {token}_{i}"
                i += 1
            prompt = prompt.replace(token, replacement)
    return prompt


@torch.no_grad()
def encode_prompt(prompt):
    """(prompt_embeds, pooled) for one prompt, as the diffusers pipelines build them."""
    pipe = shared.sd_model
    if prompt in cache:
        return cache[prompt]
    used = []
    text = _expand(prompt, pipe.tokenizer, used)
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
        database.embeddings_used = sorted(set(used))
    cache[prompt] = (torch.cat(hidden, dim=-1), pooled)
    return cache[prompt]
