"""``backend.text_processing.textual_inversion``: one engine's ``EmbeddingDatabase``.

Same API and rules as Forge's: directories added with ``add_embedding_dir``
are walked recursively by ``load_textual_inversion_embeddings()`` (which
clears and rescans), ``.safetensors`` and ``.pt``/``.bin`` files are read,
``create_embedding_from_data`` accepts ``string_to_param``, ``clip_g`` +
``clip_l`` and any single-tensor dict, an embedding whose width differs from
``expected_shape`` goes to ``skipped_embeddings``, and prompt tokens are
matched through ``ids_lookup`` (first id -> [(ids, embedding)], longest first).
"""

import os

import safetensors.torch
import torch


class Embedding:
    def __init__(self, vec, name, step=None):
        self.vec = vec
        self.name = name
        self.step = step
        self.shape = None
        self.vectors = 0
        self.sd_checkpoint = None
        self.sd_checkpoint_name = None


class DirWithTextualInversionEmbeddings:
    def __init__(self, path):
        self.path = path
        self.mtime = None

    def update(self):
        if os.path.isdir(self.path):
            self.mtime = os.path.getmtime(self.path)


def create_embedding_from_data(data, name, filename="unknown embedding file", filepath=None):
    if "string_to_param" in data:
        params = data["string_to_param"]
        assert len(params) == 1, "embedding file has multiple terms in it"
        vec = next(iter(params.values())).detach().to(dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    elif isinstance(data, dict) and "clip_g" in data and "clip_l" in data:
        vec = {k: v.detach().to(dtype=torch.float32) for k, v in data.items()}
        shape = data["clip_g"].shape[-1] + data["clip_l"].shape[-1]
        vectors = data["clip_g"].shape[0]
    elif isinstance(data, dict) and isinstance(next(iter(data.values())), torch.Tensor):
        assert len(data) == 1, "embedding file has multiple terms in it"
        emb = next(iter(data.values()))
        vec = (emb.unsqueeze(0) if emb.dim() == 1 else emb).detach().to(dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    else:
        raise Exception(f"Couldn't identify {filename} as neither textual inversion embedding nor diffuser concept.")
    embedding = Embedding(vec, name)
    embedding.vectors, embedding.shape = vectors, shape
    if filepath:
        embedding.filename = filepath
    return embedding


class EmbeddingDatabase:
    def __init__(self, tokenizer, expected_shape=-1):
        self.ids_lookup = {}
        self.word_embeddings = {}
        self.embedding_dirs = {}
        self.skipped_embeddings = {}
        self.expected_shape = expected_shape
        self.tokenizer = tokenizer
        self.fixes = []
        self.load_count = 0

    def add_embedding_dir(self, path):
        self.embedding_dirs[path] = DirWithTextualInversionEmbeddings(path)

    def register_embedding(self, embedding):
        return self.register_embedding_by_name(embedding, embedding.name)

    def register_embedding_by_name(self, embedding, name):
        ids = self.tokenizer([name], truncation=False, add_special_tokens=False)["input_ids"][0]
        first = ids[0]
        lookup = [x for x in self.ids_lookup.get(first, []) if x[1].name != name]
        if embedding is not None:
            lookup.append((ids, embedding))
        if lookup:
            self.ids_lookup[first] = sorted(lookup, key=lambda x: len(x[0]), reverse=True)
        else:
            self.ids_lookup.pop(first, None)
        if embedding is None:
            self.word_embeddings.pop(name, None)
            return None
        self.word_embeddings[name] = embedding
        return embedding

    def load_from_file(self, path, filename):
        name, ext = os.path.splitext(filename)
        ext = ext.upper()
        if ext in (".BIN", ".PT"):
            data = torch.load(path, map_location="cpu")
        elif ext == ".SAFETENSORS":
            data = safetensors.torch.load_file(path, device="cpu")
        else:
            return
        embedding = create_embedding_from_data(data, name, filename=filename, filepath=path)
        if self.expected_shape == -1 or self.expected_shape == embedding.shape:
            self.register_embedding(embedding)
        else:
            self.skipped_embeddings[name] = embedding

    def load_from_dir(self, embdir):
        if not os.path.isdir(embdir.path):
            return
        for root, _, files in os.walk(embdir.path, followlinks=True):
            for fn in files:
                try:
                    full = os.path.join(root, fn)
                    if os.stat(full).st_size == 0:
                        continue
                    self.load_from_file(full, fn)
                except Exception:
                    print(f"Error loading embedding {fn}")

    def load_textual_inversion_embeddings(self):
        self.ids_lookup.clear()
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        self.load_count += 1
        for embdir in self.embedding_dirs.values():
            self.load_from_dir(embdir)
            embdir.update()

    def find_embedding_at_position(self, tokens, offset):
        for ids, embedding in self.ids_lookup.get(tokens[offset], []):
            if tokens[offset:offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None
