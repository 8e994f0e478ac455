"""``backend.text_processing.classic_engine``: the CLIP text engine of SD1/SD2/SDXL models.

As in Forge: the constructor wraps the text encoder's token embedding in
``CLIPEmbeddingForTextualInversion`` (``.wrapped`` = the ``nn.Embedding``,
``.weight`` registered again), builds the engine's own ``EmbeddingDatabase``
and reads the embeddings folder once; prompts are cut in 75-token chunks,
embedding names found in the database become ``0`` tokens whose rows the
wrapper splices (``torch.cat``) from ``embedding.vec`` (the dict key is
``embedding_key`` for SDXL files); ``encode_with_transformers`` casts the
embeddings to float32, runs the transformer with hidden states, takes layer
``-max(clip_skip, minimal_clip_skip)``, optionally the final layer norm, and
the pooled output (projected for CLIP-G). Used embeddings are reported in
``last_extra_generation_params["TI"]`` (Forge main: this module's global;
Neo: ``backend.args.dynamic_args``). Prompt weighting and BREAK are left out
(every multiplier is 1, for which the "Original" emphasis changes nothing).
"""

import math
import os
from collections import namedtuple

import torch

from backend import memory_management
from backend.args import dynamic_args
from backend.text_processing.textual_inversion import EmbeddingDatabase

PromptChunkFix = namedtuple("PromptChunkFix", ["offset", "embedding"])
last_extra_generation_params = {}
FLAVOR = os.environ.get("FORGE_STANDIN_FLAVOR", "neo")


def _infotext():
    return dynamic_args.last_extra_generation_params if FLAVOR == "neo" else last_extra_generation_params


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []
        self.fixes = []


class CLIPEmbeddingForTextualInversion(torch.nn.Module):
    def __init__(self, wrapped, embeddings, textual_inversion_key="clip_l"):
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings
        self.textual_inversion_key = textual_inversion_key
        self.weight = self.wrapped.weight

    def forward(self, input_ids):
        batch_fixes = self.embeddings.fixes
        self.embeddings.fixes = None
        inputs_embeds = self.wrapped(input_ids)
        if not batch_fixes or max(len(x) for x in batch_fixes) == 0:
            return inputs_embeds
        vecs = []
        for fixes, tensor in zip(batch_fixes, inputs_embeds):
            for offset, embedding in fixes:
                emb = embedding.vec[self.textual_inversion_key] if isinstance(embedding.vec, dict) else embedding.vec
                emb = emb.to(inputs_embeds)
                length = min(tensor.shape[0] - offset - 1, emb.shape[0])
                tensor = torch.cat([tensor[0:offset + 1], emb[0:length], tensor[offset + 1 + length:]])
                tensor = tensor.to(inputs_embeds.dtype)
            vecs.append(tensor)
        return torch.stack(vecs)


class ClassicTextProcessingEngine:
    def __init__(self, text_encoder, tokenizer, chunk_length=75, embedding_dir=None, embedding_key="clip_l",
                 embedding_expected_shape=768, emphasis_name="Original", text_projection=False, minimal_clip_skip=1,
                 clip_skip=1, return_pooled=False, final_layer_norm=True):
        self.embeddings = EmbeddingDatabase(tokenizer, embedding_expected_shape)
        if isinstance(embedding_dir, str):
            self.embeddings.add_embedding_dir(embedding_dir)
            self.embeddings.load_textual_inversion_embeddings()
        self.embedding_key = embedding_key
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.text_projection = text_projection
        self.minimal_clip_skip = minimal_clip_skip
        self.clip_skip = clip_skip
        self.return_pooled = return_pooled
        self.final_layer_norm = final_layer_norm
        self.chunk_length = chunk_length
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        self.id_pad = tokenizer.pad_token_id
        embeddings = text_encoder.transformer.text_model.embeddings
        embeddings.token_embedding = CLIPEmbeddingForTextualInversion(embeddings.token_embedding, self.embeddings,
                                                                      textual_inversion_key=embedding_key)

    def get_target_prompt_token_count(self, token_count):
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def tokenize(self, texts):
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def encode_with_transformers(self, tokens):
        target_device = memory_management.text_encoder_device()
        embeddings = self.text_encoder.transformer.text_model.embeddings
        embeddings.position_ids = embeddings.position_ids.to(device=target_device)
        embeddings.position_embedding = embeddings.position_embedding.to(dtype=torch.float32)
        embeddings.token_embedding = embeddings.token_embedding.to(dtype=torch.float32)
        tokens = tokens.to(target_device)
        outputs = self.text_encoder.transformer(tokens, output_hidden_states=True)
        z = outputs.hidden_states[-max(self.clip_skip, self.minimal_clip_skip)]
        if self.final_layer_norm:
            z = self.text_encoder.transformer.text_model.final_layer_norm(z)
        if self.return_pooled:
            pooled = outputs.pooler_output
            if self.text_projection and self.embedding_key != "clip_l":
                pooled = self.text_encoder.transformer.text_projection(pooled)
            z.pooled = pooled
        return z

    def tokenize_line(self, line):
        tokens = self.tokenize([line])[0]
        chunks, chunk = [], PromptChunk()

        def next_chunk():
            nonlocal chunk
            pad = self.chunk_length - len(chunk.tokens)
            chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end] * pad + [self.id_end]
            chunk.multipliers = [1.0] * len(chunk.tokens)
            chunks.append(chunk)
            chunk = PromptChunk()

        position = 0
        while position < len(tokens):
            if len(chunk.tokens) == self.chunk_length:
                next_chunk()
            embedding, length = self.embeddings.find_embedding_at_position(tokens, position)
            if embedding is None:
                chunk.tokens.append(tokens[position])
                position += 1
                continue
            vectors = int(embedding.vectors)
            if len(chunk.tokens) + vectors > self.chunk_length:
                next_chunk()
            chunk.fixes.append(PromptChunkFix(len(chunk.tokens), embedding))
            chunk.tokens += [0] * vectors
            position += length
        if chunk.tokens or not chunks:
            next_chunk()
        return chunks, len(tokens)

    def process_tokens(self, batch_tokens, batch_multipliers):
        tokens = torch.asarray(batch_tokens)
        if self.id_end != self.id_pad:
            for row in range(len(batch_tokens)):
                index = batch_tokens[row].index(self.id_end)
                tokens[row, index + 1:] = self.id_pad
        return self.encode_with_transformers(tokens)

    def __call__(self, texts):
        batch_chunks = [self.tokenize_line(line)[0] for line in texts]
        used = {}
        zs = []
        for i in range(max(len(chunks) for chunks in batch_chunks)):
            batch = [chunks[i] if i < len(chunks) else self.tokenize_line("")[0][0] for chunks in batch_chunks]
            self.embeddings.fixes = [c.fixes for c in batch]
            for fixes in self.embeddings.fixes:
                for _, embedding in fixes:
                    used[embedding.name] = embedding
            zs.append(self.process_tokens([c.tokens for c in batch], [c.multipliers for c in batch]))
        if used:
            params = _infotext()
            names = ", ".join(used)
            params["TI"] = params["TI"] + ", " + names if "TI" in params else names
        if self.return_pooled:
            return torch.hstack(zs), zs[0].pooled
        return torch.hstack(zs)
