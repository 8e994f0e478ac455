"""``modules.textual_inversion`` of SD.Next: embeddings become added tokens with their vectors written
into the text encoders' token tables.

As in SD.Next: each ``.safetensors`` file is one embedding whose tensors
(in file order) are matched to text encoders by width; its tokens are
``name, name_1, ...`` (one per vector), added to every tokenizer as
``AddedToken(normalized=False)``; a text encoder whose table is smaller than
its tokenizer is resized, then each token's row is overwritten with its
vector. ``load_textual_inversion_embeddings(force_reload)`` rescans the
embedding folders (only when the folder changed, unless forced).
"""

import os

import safetensors.torch

from modules import devices, shared


class Embedding:
    def __init__(self, vec, name, filename=None):
        self.vec = vec
        self.name = name
        self.filename = filename
        self.tokens = None
        self.vector_sizes = []


def _text_encoders(pipe):
    encoders, tokenizers, sizes = [], [], []
    for te, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        encoder, tokenizer = getattr(pipe, te, None), getattr(pipe, tok, None)
        if encoder is not None and tokenizer is not None:
            encoders.append(encoder)
            tokenizers.append(tokenizer)
            sizes.append(encoder.get_input_embeddings().weight.shape[-1])
    return encoders, tokenizers, sizes


class EmbeddingDatabase:
    def __init__(self):
        self.ids_lookup = {}
        self.word_embeddings = {}
        self.skipped_embeddings = {}
        self.embedding_dirs = {}
        self.embeddings_used = []
        self.mtimes = {}

    def add_embedding_dir(self, path):
        self.embedding_dirs[path] = None

    def _load_file(self, path, pipe):
        from transformers import AddedToken

        name = os.path.splitext(os.path.basename(path))[0]
        embedding = Embedding([], name, path)
        with safetensors.torch.safe_open(path, framework="pt") as f:
            for key in f.keys():
                embedding.vec.append(f.get_tensor(key))
        embedding.tokens = [name if i == 0 else f"{name}_{i}" for i in range(len(embedding.vec[0]))]
        embedding.vector_sizes = [v.shape[-1] for v in embedding.vec]
        encoders, tokenizers, sizes = _text_encoders(pipe)
        if not all(s in sizes for s in embedding.vector_sizes) or len(embedding.vector_sizes) > len(sizes):
            self.skipped_embeddings[name] = embedding
            return
        for tokenizer in tokenizers:
            tokenizer.add_tokens([AddedToken(t, normalized=False) for t in embedding.tokens])
        with devices.inference_context():
            for vector, size in zip(embedding.vec, embedding.vector_sizes):
                index = sizes.index(size)
                encoder, tokenizer = encoders[index], tokenizers[index]
                if encoder.get_input_embeddings().weight.shape[0] != len(tokenizer):
                    encoder.resize_token_embeddings(len(tokenizer))
                for token, row in zip(embedding.tokens, vector.unbind()):
                    encoder.get_input_embeddings().weight.data[tokenizer.convert_tokens_to_ids(token)] = row
        self.word_embeddings[name] = embedding
        self.ids_lookup[pipe.tokenizer.convert_tokens_to_ids(name)] = [([name], embedding)]

    def load_textual_inversion_embeddings(self, force_reload=False):
        if not shared.sd_loaded or shared.sd_model_type not in ("ldm", "sd", "sdxl"):
            return
        mtimes = {d: os.path.getmtime(d) if os.path.isdir(d) else None for d in self.embedding_dirs}
        if not force_reload and mtimes == self.mtimes:
            return
        self.ids_lookup.clear()
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        self.embeddings_used.clear()
        pipe = shared.sd_model
        for folder in self.embedding_dirs:
            if not os.path.isdir(folder):
                continue
            for root, _, files in os.walk(folder):
                for fn in sorted(files):
                    if fn.lower().endswith(".safetensors") and os.path.getsize(os.path.join(root, fn)) > 0:
                        self._load_file(os.path.join(root, fn), pipe)
        self.mtimes = mtimes
