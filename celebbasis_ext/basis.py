"""The celeb basis: per name position, a mean and an orthonormal basis.

Rows of the model's raw token-embedding table for the first-name tokens
(position 1) and family-name tokens (position 2) of the usable names are
centred, and a full SVD gives the right singular vectors; the first K span the
space an identity lives in (K may exceed the data rank: the extra directions
are still orthonormal, they just carry no celebrity variance). SDXL's two
tables are concatenated per row, [CLIP-L | OpenCLIP-bigG], so one basis
covers both encoders and an identity stays 2 x K numbers.

The basis is cached on disk keyed by the tables' fingerprint, the names and K,
so a fine-tuned checkpoint gets its own basis and the second load is instant.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .names import CelebName, names_digest, read_names, tokenize_names

DEFAULT_K = 512


@dataclass
class CelebBasis:
    """mean: (2, W); vectors: (2, K, W) orthonormal rows; rank: data rank per position."""

    mean: torch.Tensor
    vectors: torch.Tensor
    rank: tuple[int, int]
    names_used: int
    names_total: int
    fingerprint: str
    cache_path: str | None = None
    build_seconds: float = 0.0
    from_cache: bool = False

    @property
    def k(self) -> int:
        return self.vectors.shape[1]

    @property
    def width(self) -> int:
        return self.vectors.shape[2]

    def embed(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Embedding(s) e_k = mean_k + c_k . B_k for coefficients (..., 2, K) -> (..., 2, W)."""
        vectors = self.vectors.to(coefficients.device, coefficients.dtype)
        mean = self.mean.to(coefficients.device, coefficients.dtype)
        return mean + torch.einsum("...pk,pkw->...pw", coefficients, vectors)

    def project(self, embedding: torch.Tensor) -> torch.Tensor:
        """Coefficients of the embedding's offset from the mean (inverse of ``embed`` on the span)."""
        vectors = self.vectors.to(embedding.device, embedding.dtype)
        return torch.einsum("...pw,pkw->...pk", embedding - self.mean.to(embedding), vectors)

    def summary(self) -> dict:
        return {
            "k": self.k, "width": self.width, "rank": list(self.rank), "names_used": self.names_used,
            "names_total": self.names_total, "fingerprint": self.fingerprint, "cache_path": self.cache_path,
            "from_cache": self.from_cache, "build_seconds": round(self.build_seconds, 3),
        }


def joint_table(tables: Sequence[torch.Tensor]) -> torch.Tensor:
    """One row per token: the encoders' rows side by side (float32, CPU)."""
    return torch.cat([table.detach().to("cpu", torch.float32) for table in tables], dim=1)


def compute_basis(table: torch.Tensor, celebs: Sequence[CelebName], k: int = DEFAULT_K):
    """mean (2, W), vectors (2, K, W), rank per position, from a (vocab, W) table.

    Token ids are de-duplicated per position, so a common first name counts once.
    """
    used = [celeb for celeb in celebs if celeb.used]
    if len(used) < 2:
        raise ValueError(f"only {len(used)} usable names: the basis needs at least 2")
    width = table.shape[1]
    means, bases, ranks = [], [], []
    for position in range(2):
        ids = sorted({celeb.token_pair[position] for celeb in used})
        rows = table[torch.tensor(ids)].to(torch.float64)
        mean = rows.mean(dim=0)
        centred = rows - mean
        _, singular, vh = torch.linalg.svd(centred, full_matrices=True)
        tolerance = singular.max() * max(centred.shape) * torch.finfo(torch.float32).eps
        ranks.append(int((singular > tolerance).sum()))
        means.append(mean)
        bases.append(vh[: min(k, width)])
    return torch.stack(means).float(), torch.stack(bases).float(), tuple(ranks)


def default_cache_dir() -> Path:
    from .clip_tokenizer import cache_dir

    return cache_dir() / "basis"


def load_or_build_basis(
    tables: Sequence[torch.Tensor],
    tokenize,
    fingerprint: str,
    names_file: str | os.PathLike | None = None,
    k: int = DEFAULT_K,
    cache_dir: str | os.PathLike | None = None,
) -> CelebBasis:
    """The basis for these tables, from the cache when present (see module docstring)."""
    from safetensors.torch import load_file, save_file

    started = time.perf_counter()
    celebs = tokenize_names(read_names(names_file), tokenize)
    used = sum(celeb.used for celeb in celebs)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"basis-{fingerprint}-{names_digest(celebs)}-k{k}.safetensors"
    if path.is_file():
        try:
            data = load_file(str(path))
            rank = tuple(int(r) for r in data["rank"].tolist())
            return CelebBasis(data["mean"], data["vectors"], rank, used, len(celebs), fingerprint, str(path),
                              time.perf_counter() - started, True)
        except Exception:
            pass  # a damaged cache file is rebuilt below
    mean, vectors, rank = compute_basis(joint_table(tables), celebs, k)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(handle)
        save_file({"mean": mean.contiguous(), "vectors": vectors.contiguous(), "rank": torch.tensor(rank)}, tmp)
        os.replace(tmp, path)
        cache_path = str(path)
    except OSError:
        cache_path = None  # a read-only cache only costs time
    return CelebBasis(mean, vectors, rank, used, len(celebs), fingerprint, cache_path,
                      time.perf_counter() - started, False)


def basis_for(adapter, names_file=None, k: int = DEFAULT_K, cache_dir=None) -> CelebBasis:
    """Convenience: the basis of a loaded model behind a ``ModelAdapter``."""
    tables = adapter.token_embedding_tables()
    from .adapter import fingerprint_tables

    return load_or_build_basis(tables, adapter.tokenize, fingerprint_tables(tables), names_file, k, cache_dir)
