"""The CLIP BPE tokenizer, built offline from the BPE merges file.

Stable Diffusion 1.x, 2.x and SDXL all use OpenAI's CLIP BPE vocabulary
(49408 tokens). A diffusers model folder ships it; a single-file checkpoint
does not. The merges list (``bpe_simple_vocab_16e6.txt.gz``) is inside
open_clip, and transformers' CLIP tokenizer may sit in the Hugging Face cache
of any WebUI user: we look there, then build ``vocab.json``/``merges.txt``
once into our cache folder.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

from .errors import ModelFilesMissing

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MERGE_COUNT = VOCAB_SIZE - 256 * 2 - 2
START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"
HF_TOKENIZER_REPOS = ("openai/clip-vit-large-patch14",)


def cache_dir() -> Path:
    """Where derived files live (CELEBBASIS_CACHE overrides ~/.cache/celebbasis)."""
    root = os.environ.get("CELEBBASIS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "celebbasis")
    return Path(root)


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins CLIP's BPE uses for raw bytes, in vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def find_bpe_file() -> Path | None:
    """The merges file shipped with open_clip, if installed (no import: it pulls torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / BPE_FILE_NAME
    return candidate if candidate.is_file() else None


def write_vocab_files(bpe_file: Path, out_dir: Path) -> Path:
    """Derive transformers' ``vocab.json`` and ``merges.txt`` from the merges file."""
    lines = gzip.open(bpe_file).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]
    alphabet = _byte_alphabet()
    vocab = alphabet + [symbol + "</w>" for symbol in alphabet] + ["".join(pair) for pair in merges]
    vocab += [START_TOKEN, END_TOKEN]
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_vocab, tmp_merges = out_dir / "vocab.json.tmp", out_dir / "merges.txt.tmp"
    tmp_vocab.write_text(json.dumps({token: index for index, token in enumerate(vocab)}), encoding="utf-8")
    tmp_merges.write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n", encoding="utf-8")
    os.replace(tmp_merges, out_dir / "merges.txt")
    os.replace(tmp_vocab, out_dir / "vocab.json")
    return out_dir


def _hf_cached_tokenizer_dir() -> Path | None:
    """A CLIP tokenizer already in the Hugging Face cache (WebUI users usually have one)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for repo in HF_TOKENIZER_REPOS:
        try:
            folder = snapshot_download(repo, allow_patterns=["vocab.json", "merges.txt"], local_files_only=True)
        except Exception:
            continue
        if (Path(folder) / "vocab.json").is_file() and (Path(folder) / "merges.txt").is_file():
            return Path(folder)
    return None


def tokenizer_files_dir() -> Path:
    """A folder with ``vocab.json`` and ``merges.txt`` for the CLIP BPE vocabulary."""
    derived = cache_dir() / "clip_tokenizer"
    if (derived / "vocab.json").is_file() and (derived / "merges.txt").is_file():
        return derived
    bpe = find_bpe_file()
    if bpe is not None:
        return write_vocab_files(bpe, derived)
    cached = _hf_cached_tokenizer_dir()
    if cached is not None:
        return cached
    raise ModelFilesMissing(
        "the CLIP tokenizer files are not available offline: use a diffusers model folder (it ships them), "
        "or `pip install --no-deps open_clip_torch`, or put vocab.json and merges.txt in " + str(derived)
    )


@lru_cache(maxsize=4)
def _shared_tokenizer(pad_token: str):
    from transformers import CLIPTokenizer

    folder = tokenizer_files_dir()
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, pad_token=pad_token
    )


def clip_tokenizer(pad_token: str = END_TOKEN):
    """A new transformers ``CLIPTokenizer`` (SD1 pads with end-of-text, SD2/SDXL's second with "!").

    A copy each call: loading an embedding adds tokens to a tokenizer, which
    must not leak into other pipelines.
    """
    import copy

    return copy.deepcopy(_shared_tokenizer(pad_token))
