"""Render prompts with Textual-Inversion embeddings in a diffusers pipeline.

``load_embeddings_into(pipe, folder)`` makes every ``NAME.safetensors`` in a
folder usable in prompts as ``NAME`` (matched case-insensitively, as the CLIP
tokenizer lower-cases prompts): SD1/SD2 files hold ``emb_params`` [n, width];
SDXL files hold ``clip_l`` [n, 768] and ``clip_g`` [n, 1280], loaded into
each text encoder with ``pipe.load_textual_inversion``. Files that cannot be
used are skipped with a warning (logged, and passed to ``warn`` if given):
wrong width (an embedding for another model family), a name that is already
a vocabulary word (diffusers refuses those, and the word would be shadowed),
a file that is not an embedding. Loading the same name again replaces its
vectors.

diffusers expands an n-vector token ``name`` into ``name name_1 ...`` with a
plain ``str.replace``, which garbles a prompt where one name is a prefix of
another (``ann`` and ``anna``) and misses names written in another case;
this module installs a word-aware, case-insensitive replacement on the
pipeline instance it loads into (``pipe.maybe_convert_prompt``).

``embeddings_for_prompts(pipe, folder)`` does the same for the length of a
``with`` block without changing the model (for a pipeline that is tuned too).

``generate_image(pipe, prompt, ...)`` renders one image reproducibly (the
seed drives a CPU generator, so a seed gives the same latents on any device).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import re
import types
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

from .errors import BadInput

logger = logging.getLogger(__name__)

#: Embedding files are a few KB; anything bigger is not one.
MAX_EMBEDDING_BYTES = 64 * 1024 * 1024


def _text_encoders(pipe) -> list[tuple[str, object, object]]:
    """(export key, tokenizer, text encoder) in export-key order."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return [("clip_l", pipe.tokenizer, pipe.text_encoder), ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2)]
    return [("emb_params", pipe.tokenizer, pipe.text_encoder)]


def _width(encoder) -> int:
    return int(encoder.get_input_embeddings().weight.shape[-1])


def _family_hint(keys, shapes: dict) -> str:
    if "clip_g" in keys or "clip_l" in keys:
        return "an SDXL embedding (clip_l/clip_g)"
    width = shapes.get("emb_params", [0])[-1]
    family = {768: "an SD1.x embedding", 1024: "an SD2.x embedding"}.get(width, "an SD1/SD2-style embedding")
    return f"{family} (emb_params, width {width})"


def _read_embedding(path: Path, wanted: list[str]) -> dict:
    """The tensors of one embedding file as float32 [n, width], or raise ValueError(reason)."""
    import torch
    from safetensors import safe_open

    from .loading import read_safetensors_header

    if path.stat().st_size > MAX_EMBEDDING_BYTES:
        raise ValueError("is too large to be an embedding (is it a model checkpoint?)")
    try:
        header, _ = read_safetensors_header(path)
    except BadInput as error:
        raise ValueError(str(error).replace(f"{path.name} ", "", 1)) from None
    keys = set(header)
    shapes = {key: header[key]["shape"] for key in keys}
    if set(wanted) <= keys:
        chosen = wanted
    elif wanted == ["emb_params"] and len(keys) == 1 and not keys & {"clip_l", "clip_g"}:
        chosen = [next(iter(keys))]  # diffusers' own format: {token: tensor}
    elif keys & {"emb_params", "clip_l", "clip_g"}:
        needs = "clip_l and clip_g" if "clip_g" in wanted else "emb_params"
        raise ValueError(f"is {_family_hint(keys, shapes)}; this model needs {needs}")
    else:
        raise ValueError("is not a Textual-Inversion embedding (no emb_params or clip_l/clip_g)")
    tensors = {}
    with safe_open(str(path), framework="pt") as handle:
        for want, key in zip(wanted, chosen):
            tensor = handle.get_tensor(key).to(torch.float32)
            if tensor.ndim == 1:
                tensor = tensor[None]
            if tensor.ndim != 2 or tensor.shape[0] == 0:
                raise ValueError(f"has a {key} tensor of shape {list(tensor.shape)}, not [vectors, width]")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"has NaN or infinite values in {key}")
            tensors[want] = tensor
    counts = {tensor.shape[0] for tensor in tensors.values()}
    if len(counts) != 1:
        raise ValueError("has different vector counts per text encoder")
    return tensors


def _own_tokens(tokenizer, name: str) -> int:
    """How many vectors ``name`` already has in this tokenizer as added tokens (0: none)."""
    added = tokenizer.added_tokens_encoder
    if name not in added:
        return 0
    count = 1
    while f"{name}_{count}" in added:
        count += 1
    return count


def _suggest(name: str, vocab) -> str:
    for suffix in ("cb", "_cb", "-person", "_x"):
        if name + suffix not in vocab:
            return name + suffix
    return f"{name}_{zlib.crc32(name.encode()) % 1000}"


def _conflict(tokenizer, name: str, count: int) -> Optional[str]:
    """Why ``name`` (n vectors) cannot become new tokens here, or None."""
    vocab = tokenizer.get_vocab()
    candidates = [name] + [f"{name}_{i}" for i in range(1, count)]
    for token in candidates:
        if token in vocab:
            return (f"'{token}' is already in the model's vocabulary (a word the model knows), "
                    "so prompts could not tell them apart: rename the file, "
                    f"e.g. to {_suggest(name, vocab)}.safetensors")
    return None


def _write_rows(tokenizer, encoder, name: str, vectors) -> None:
    import torch

    weight = encoder.get_input_embeddings().weight
    tokens = [name] + [f"{name}_{i}" for i in range(1, vectors.shape[0])]
    with torch.no_grad():
        for token, vector in zip(tokens, vectors):
            weight[tokenizer.convert_tokens_to_ids(token)] = vector.to(weight.device, weight.dtype)


def _embedding_files(folder, encoders, warning: Callable[[str], None]):
    """(file name, prompt name, {key: [n, width] float32}) for each usable embedding in ``folder``.

    Unusable files are skipped with a warning; a missing folder is ``BadInput``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"no such embeddings folder: {folder}")
    wanted = [key for key, _, _ in encoders]
    widths = {key: _width(encoder) for key, _, encoder in encoders}
    for path in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if not path.is_file() or path.suffix.lower() != ".safetensors":
            if path.is_file() and path.suffix.lower() in (".pt", ".bin", ".ckpt"):
                warning(f"embedding {path.name} skipped: pickled files are never loaded; use .safetensors")
            continue
        name = path.stem.strip().lower()
        if not name or re.search(r"\s", name):
            one_word = re.sub(r"\s+", "_", name)
            warning(f"embedding {path.name} skipped: its name has spaces; rename it to one word (e.g. {one_word})")
            continue
        try:
            tensors = _read_embedding(path, wanted)
        except ValueError as error:
            warning(f"embedding {path.name} skipped: it {error}")
            continue
        except OSError as error:
            warning(f"embedding {path.name} skipped: cannot read it ({error.strerror or error})")
            continue
        mismatch = [f"{key} has width {tensors[key].shape[1]}, the model needs {widths[key]}"
                    for key in wanted if tensors[key].shape[1] != widths[key]]
        if mismatch:
            warning(f"embedding {path.name} skipped: made for another model ({'; '.join(mismatch)})")
            continue
        yield path.name, name, tensors


def _warner(warn: Optional[Callable[[str], None]]) -> Callable[[str], None]:
    def warning(message: str) -> None:
        logger.warning(message)
        if warn is not None:
            warn(message)

    return warning


def load_embeddings_into(pipe, folder, *, warn: Optional[Callable[[str], None]] = None) -> list[str]:
    """Load every ``.safetensors`` embedding in ``folder``; return the prompt names loaded, sorted.

    Names are the file names without extension, lower-cased. Unusable files
    are skipped with a warning; a missing folder is ``BadInput``.
    """
    warning = _warner(warn)
    encoders = _text_encoders(pipe)
    loaded: list[str] = []
    for file_name, name, tensors in _embedding_files(folder, encoders, warning):
        count = next(iter(tensors.values())).shape[0]
        existing = [_own_tokens(tokenizer, name) for _, tokenizer, _ in encoders]
        if all(n == count for n in existing):
            for key, tokenizer, encoder in encoders:  # loaded before: replace the vectors
                _write_rows(tokenizer, encoder, name, tensors[key])
            loaded.append(name)
            continue
        if any(existing):
            warning(f"embedding {file_name} skipped: '{name}' is already loaded with a different number of vectors; "
                    "reload the model to change it")
            continue
        reason = next((why for _, tokenizer, _ in encoders if (why := _conflict(tokenizer, name, count))), None)
        if reason:
            warning(f"embedding {file_name} skipped: {reason}")
            continue
        done = []
        try:
            for key, tokenizer, encoder in encoders:
                pipe.load_textual_inversion(tensors[key], token=name, tokenizer=tokenizer, text_encoder=encoder)
                done.append((tokenizer, encoder))
        except (ValueError, RuntimeError) as error:
            for tokenizer, encoder in done:  # SDXL: do not leave it half loaded
                try:
                    pipe.unload_textual_inversion([name] + [f"{name}_{i}" for i in range(1, count)],
                                                  tokenizer=tokenizer, text_encoder=encoder)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            warning(f"embedding {file_name} skipped: diffusers refused it ({first_line[:200]})")
            continue
        loaded.append(name)
    install_prompt_expansion(pipe)
    return loaded


@contextlib.contextmanager
def embeddings_for_prompts(pipe, folder, *, warn: Optional[Callable[[str], None]] = None) -> Iterator[list[str]]:
    """Within the block, prompts given to ``pipe`` may use every embedding in ``folder``; the model is untouched.

    For a pipeline that is also tuned (the standalone UI): ``load_embeddings_into``
    would grow its token tables, which changes the model's fingerprint (the
    basis cache key) and keeps the name as a token. Here the pipeline's
    tokenizers are swapped for copies with the names added, and each text
    encoder's token-embedding module gets hooks that look the new ids up as
    row 0 and then write the file's vectors in their place, exactly the rows
    ``load_embeddings_into`` would have added. On exit the tokenizers are put
    back and the hooks removed. Yields the names usable, sorted.
    """
    warning = _warner(warn)
    encoders = _text_encoders(pipe)
    copies = [copy.deepcopy(tokenizer) for _, tokenizer, _ in encoders]
    extra: list[dict] = [{} for _ in encoders]  # per encoder: new token id -> vector
    names: list[str] = []
    for file_name, name, tensors in _embedding_files(folder, encoders, warning):
        count = next(iter(tensors.values())).shape[0]
        tokens = [name] + [f"{name}_{i}" for i in range(1, count)]
        reason = next((why for tokenizer in copies if (why := _conflict(tokenizer, name, count))), None)
        if reason:
            warning(f"embedding {file_name} skipped: {reason}")
            continue
        for index, ((key, _, _), tokenizer) in enumerate(zip(encoders, copies)):
            tokenizer.add_tokens(tokens)
            for token, vector in zip(tokens, tensors[key]):
                extra[index][tokenizer.convert_tokens_to_ids(token)] = vector
        names.append(name)
    attributes = ["tokenizer", "tokenizer_2"][: len(encoders)]
    originals = [getattr(pipe, attribute) for attribute in attributes]
    handles = []
    try:
        for (_, _, encoder), vectors in zip(encoders, extra):
            if vectors:
                handles += _lookup_hooks(encoder.get_input_embeddings(), vectors)
        for attribute, tokenizer in zip(attributes, copies):
            setattr(pipe, attribute, tokenizer)
        install_prompt_expansion(pipe)
        yield names
    finally:
        for attribute, tokenizer in zip(attributes, originals):
            setattr(pipe, attribute, tokenizer)
        for handle in handles:
            handle.remove()


def _lookup_hooks(embedding, vectors: dict) -> list:
    """Hooks on an ``nn.Embedding``: ids in ``vectors`` are looked up as row 0, then replaced by their vector."""
    import torch

    new_ids = torch.tensor(sorted(vectors))
    seen = {}

    def before(module, args):
        ids = args[0]
        mask = torch.isin(ids, new_ids.to(ids.device))
        seen["ids"] = ids if bool(mask.any()) else None
        return None if seen["ids"] is None else (ids.masked_fill(mask, 0), *args[1:])

    def after(module, args, output):
        ids = seen.pop("ids", None)
        if ids is None:
            return output
        output = output.clone()
        for token_id, vector in vectors.items():
            output[ids == token_id] = vector.to(output.device, output.dtype)
        return output

    return [embedding.register_forward_pre_hook(before), embedding.register_forward_hook(after)]


# ----------------------------------------------------------------------------- prompts
def expand_prompt(prompt: str, tokenizer) -> str:
    """Write each multi-vector embedding name as ``name name_1 ... name_{n-1}``.

    Matches like the tokenizer does (added tokens, longest first, any case),
    so ``anna`` is not mistaken for ``ann`` + "a", and writes each name as it
    was added (lower case), which every transformers version then finds; a
    name already followed by its other tokens is not expanded again, so
    expanding twice changes nothing.
    """
    added = [token for token in tokenizer.added_tokens_encoder if token not in set(tokenizer.all_special_tokens)]
    if not added or not prompt:
        return prompt
    lookup = {token.lower(): token for token in added}
    multi = {}
    for token in added:
        count = _own_tokens(tokenizer, token)
        if count > 1:
            multi[token.lower()] = (token, count)
    if not multi:
        return prompt
    pattern = re.compile("|".join(re.escape(t) for t in sorted(lookup, key=len, reverse=True)), re.IGNORECASE)

    def replace(match) -> str:
        # the name as it was added: transformers 4.x matches added tokens before lower-casing
        text = lookup[match.group(0).lower()]
        if text.lower() not in multi:
            return text
        base, count = multi[text.lower()]
        tail = "".join(f" {base}_{i}" for i in range(1, count))
        following = match.string[match.end():match.end() + len(tail) + 1]
        if following.lower() == tail.lower() or following[:-1].lower() == tail.lower() and not (
                following[-1:].isalnum() or following[-1:] == "_"):
            return text  # already written out
        return text + tail

    return pattern.sub(replace, prompt)


def _maybe_convert_prompt(self, prompt, tokenizer):
    if isinstance(prompt, list):
        return [expand_prompt(p, tokenizer) for p in prompt]
    return expand_prompt(prompt, tokenizer)


def install_prompt_expansion(pipe) -> None:
    """Replace the pipeline instance's ``maybe_convert_prompt`` with ``expand_prompt``."""
    if getattr(pipe, "_celebbasis_prompt_expansion", False):
        return
    pipe.maybe_convert_prompt = types.MethodType(_maybe_convert_prompt, pipe)
    pipe._celebbasis_prompt_expansion = True


# ----------------------------------------------------------------------------- rendering
def generate_image(pipe, prompt: str, negative: str = "", steps: int = 30, seed: int = 0,
                   width: Optional[int] = None, height: Optional[int] = None, guidance: float = 7.0):
    """One image for ``prompt`` (embedding names usable as words), as a PIL image.

    ``width``/``height`` default to the model's native size and must be
    multiples of 8. The same seed gives the same image on the same device.
    """
    import torch

    if not isinstance(prompt, str):
        raise BadInput("the prompt must be text")
    if int(steps) < 1 or int(steps) > 1000:
        raise BadInput(f"steps must be between 1 and 1000 (got {steps})")
    if not math.isfinite(float(guidance)) or float(guidance) < 0:
        raise BadInput(f"guidance must be a non-negative number (got {guidance})")
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    sample_size = pipe.unet.config.sample_size
    native = int(sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size) * scale
    width = native if width is None else int(width)
    height = native if height is None else int(height)
    for label, value in (("width", width), ("height", height)):
        if value < scale or value % 8 or value > 4096:
            raise BadInput(f"{label} must be a multiple of 8 between {scale} and 4096 (got {value})")
    install_prompt_expansion(pipe)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    result = pipe(
        prompt=prompt,
        negative_prompt=negative or None,
        num_inference_steps=int(steps),
        guidance_scale=float(guidance),
        width=width,
        height=height,
        generator=generator,
        output_type="pil",
    )
    return result.images[0]
