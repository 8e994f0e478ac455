"""The CLIP BPE tokenizer files, found on disk or fetched once.

Stable Diffusion 1.x, 2.x and SDXL all use OpenAI's CLIP BPE vocabulary
(49408 tokens). A diffusers model folder ships it; a single-file checkpoint
does not. We take it, in order, from: our own derived copy; open_clip's merges
file (``bpe_simple_vocab_16e6.txt.gz``, when that package is installed), from
which ``vocab.json``/``merges.txt`` are derived once; a CLIP tokenizer already
in the Hugging Face cache (most WebUI users have ``openai/clip-vit-large-patch14``);
and, when online, a download of that tokenizer's two files (1.7 MB) through
huggingface_hub into its standard cache. ``HF_HUB_OFFLINE=1`` forbids the download.
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
HF_TOKENIZER_REPO = "openai/clip-vit-large-patch14"
HF_TOKENIZER_REPOS = (HF_TOKENIZER_REPO,)
TOKENIZER_FILES = ("vocab.json", "merges.txt")


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
            folder = snapshot_download(repo, allow_patterns=list(TOKENIZER_FILES), local_files_only=True)
        except Exception:
            continue
        if all((Path(folder) / name).is_file() for name in TOKENIZER_FILES):
            return Path(folder)
    return None


def hub_offline() -> bool:
    """True when Hugging Face downloads are switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def download_tokenizer_files(repo: str = HF_TOKENIZER_REPO) -> Path:
    """Fetch ``vocab.json`` and ``merges.txt`` into the Hugging Face cache (progress bars on stderr)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelFilesMissing("huggingface_hub is not installed: `pip install huggingface_hub`") from None
    try:
        paths = [Path(hf_hub_download(repo, name)) for name in TOKENIZER_FILES]
    except Exception as exc:  # no network, a proxy, the hub down: each its own exception type
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first if len(first) <= 160 else first[:157].rsplit(" ", 1)[0] + " ..."
        raise ModelFilesMissing(f"could not download the CLIP tokenizer files from {repo} ({first})") from None
    return paths[0].parent


def tokenizer_source() -> tuple[str, Path] | None:
    """Where ``tokenizer_files_dir`` would take the vocabulary from, without writing or downloading anything."""
    derived = cache_dir() / "clip_tokenizer"
    if all((derived / name).is_file() for name in TOKENIZER_FILES):
        return "derived copy", derived
    bpe = find_bpe_file()
    if bpe is not None:
        return "open_clip's merges file", bpe
    cached = _hf_cached_tokenizer_dir()
    if cached is not None:
        return "Hugging Face cache", cached
    return None


def tokenizer_files_dir(allow_download: bool | None = None) -> Path:
    """A folder with ``vocab.json`` and ``merges.txt`` for the CLIP BPE vocabulary.

    ``allow_download`` None means "unless the hub is switched off offline".
    """
    derived = cache_dir() / "clip_tokenizer"
    if all((derived / name).is_file() for name in TOKENIZER_FILES):
        return derived
    bpe = find_bpe_file()
    if bpe is not None:
        return write_vocab_files(bpe, derived)
    cached = _hf_cached_tokenizer_dir()
    if cached is not None:
        return cached
    if allow_download is None:
        allow_download = not hub_offline()
    ways = (f"use a diffusers model folder (it ships them), put vocab.json and merges.txt in {derived}, "
            "or `pip install --no-deps open_clip_torch`")
    if not allow_download:
        raise ModelFilesMissing(
            f"the CLIP tokenizer files are not on this computer and downloads are off (offline): "
            f"run once online (they come from {HF_TOKENIZER_REPO}, 1.7 MB), or {ways}"
        )
    try:
        return download_tokenizer_files()
    except ModelFilesMissing as exc:
        raise ModelFilesMissing(f"{exc}; {ways}") from None


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
