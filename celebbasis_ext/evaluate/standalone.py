"""``celebbasis eval`` on a diffusers pipeline: find the identities, tune them if asked, render, score.

Order of work, so that bad input costs nothing and writes nothing: prompts,
photos and embedding files are matched and checked; the model is loaded and
each embedding checked against it; the judge, the reference faces and the
CLIP model are loaded; only then is the report folder created. Tuned
embeddings (``--tune``) go to ``REPORT_DIR/embeddings/<variant>/``, and a
resumed run reuses them.

Rendering uses the files exactly as a user's host would: each identity's
file is loaded as a Textual-Inversion embedding, under a token of its own
per variant (``ann_v0``, ``ann_v1``, ...), so variants of the same person
can live in one pipeline and a name that is also a word still works.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import BadInput
from ..identity import load_identity, validate_name
from .runner import Variant
from .scoring import Judge, photo_reference, tuned_with
from .variants import TuneVariant

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MAX_SEEDS = 1000


@dataclass
class Identities:
    """Reference photos by identity name (lower-case key -> name as written, photo paths)."""

    photos: dict[str, list[Path]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


def find_photos(folder) -> Identities:
    """``ann.jpg`` -> identity ann; a sub-folder ``ann/`` -> identity ann with every photo in it."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise BadInput(f"no such photos folder: {folder}")
    found = Identities()
    for entry in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            photos = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
            name = entry.name
        elif entry.is_file() and entry.suffix.lower() in PHOTO_SUFFIXES:
            photos, name = [entry], entry.stem
        else:
            continue
        if not photos:
            continue
        key = name.lower()
        if key in found.photos:
            raise BadInput(f"two photo sources for {name} in {root} (e.g. {name}.jpg and {name}.png): keep one, or "
                           f"put several photos in a folder {name}/")
        found.photos[key] = photos
        found.names[key] = name
    if not found.photos:
        raise BadInput(f"no photos in {root}: put one photo per person there, named like the person (ann.jpg)")
    return found


def find_embeddings(sources: Sequence[str]) -> dict[str, Path]:
    """``.safetensors`` files given directly or in folders, by lower-case name."""
    files: dict[str, Path] = {}
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            chosen = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".safetensors")
        elif path.is_file():
            if path.suffix.lower() != ".safetensors":
                raise BadInput(f"{path.name} is not a .safetensors embedding")
            chosen = [path]
        else:
            raise BadInput(f"no such embedding file or folder: {source}")
        for item in chosen:
            key = item.stem.lower()
            if key in files and files[key] != item:
                raise BadInput(f"two embeddings called {item.stem}: {files[key]} and {item}")
            files[key] = item
    if not files:
        raise BadInput(f"no .safetensors embeddings in {', '.join(sources)}")
    return files


def check_embedding(path: Path, adapter, model_label: str) -> dict:
    """The file's metadata; ``BadInput`` when it is not an embedding for this model's family and widths."""
    identity = load_identity(path)
    keys, widths = tuple(adapter.export_keys), tuple(adapter.encoder_widths)
    shapes = {key: tuple(value.shape) for key, value in identity.vectors.items()}
    found = ", ".join(f"{key} {list(shape)}" for key, shape in sorted(shapes.items()))
    needed = ", ".join(f"{key} [n, {width}]" for key, width in zip(keys, widths))
    fits = set(shapes) == set(keys) and all(len(shapes[k]) == 2 and shapes[k][1] == w for k, w in zip(keys, widths))
    if not fits:
        raise BadInput(f"{path.name} is an embedding for another model family ({identity.family.value}: {found}); "
                       f"{model_label} ({adapter.family.value}) needs {needed}")
    return dict(identity.metadata)


def file_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def match_given(variant_sources: Sequence[Sequence[str]], identities: Identities, adapter,
                model_label: str) -> tuple[list[dict[str, Path]], list[str], set]:
    """Each ``--embeddings`` variant's files by identity, checked against the photos and the model.

    Returns (files per variant, identity names in order, the face models they were tuned with).
    """
    per_variant = [find_embeddings(sources) for sources in variant_sources]
    keys = list(per_variant[0])
    for index, files in enumerate(per_variant[1:], 2):
        if set(files) != set(keys):
            differ = sorted(set(files) ^ set(keys))[0]
            raise BadInput(f"--embeddings variant {index} does not hold the same identities as the first "
                           f"({differ} is in one only)")
    missing = [key for key in keys if key not in identities.photos]
    if missing:
        name = per_variant[0][missing[0]].stem
        raise BadInput(f"no photo for {name}: put {name}.jpg (or a folder {name}/) in the photos folder; photos and "
                       "embeddings are matched by name")
    tuned = set()
    for files in per_variant:
        for key in keys:
            tuned.add(tuned_with(check_embedding(files[key], adapter, model_label)))
    return [{key: files[key] for key in keys} for files in per_variant], keys, tuned


def load_judge_references(judge: Judge, identities: Identities, keys: Sequence[str]) -> dict:
    """Each identity's reference feature from its photos, by the judge (every photo must show a face)."""
    references = {}
    for key in keys:
        reference, why = photo_reference([str(p) for p in identities.photos[key]], judge.encoder)
        if reference is None:
            raise BadInput(f"reference photo of {identities.names[key]}: {why}")
        references[identities.names[key]] = reference
    return references


# ---------------------------------------------------------------------------- tuning
def tune_variants(adapter, variants: Sequence[TuneVariant], identities: Identities, keys: Sequence[str],
                  out_dir: Path, *, names_file=None, models_dir=None, allow_download: bool = False,
                  progress_factory: Optional[Callable[[str, int], tuple]] = None, log=print) -> list[dict[str, Path]]:
    """Tune every identity for every variant into ``out_dir/embeddings/<variant>/`` (files there are reused)."""
    from ..basis import basis_for
    from ..pipeline import TuneRequest, tune_identity

    basis = None
    result = []
    for variant in variants:
        folder = out_dir / "embeddings" / Variant(variant.label, {}).slug
        record = folder / "options.json"
        described = json.dumps(variant.describe(), sort_keys=True)
        if record.is_file() and record.read_text(encoding="utf-8") != described:
            raise BadInput(f"{folder} was tuned with other options for {variant.label!r}; choose another --out")
        folder.mkdir(parents=True, exist_ok=True)
        if not record.is_file():
            from .runner import write_text_atomic

            write_text_atomic(record, described)
        files = {}
        for key in keys:
            name = identities.names[key]
            path = folder / f"{name}.safetensors"
            if not path.is_file():
                if basis is None:
                    basis = basis_for(adapter, names_file)
                log(f"tuning {name} ({variant.label})")
                update, close = progress_factory(f"{name} {variant.label}", variant.options.steps) \
                    if progress_factory else (None, lambda: None)
                try:
                    request = TuneRequest(photos=[str(p) for p in identities.photos[key]], name=name, out_dir=folder,
                                          options=variant.options, face_encoder=variant.face_encoder,
                                          models_dir=models_dir, allow_download=allow_download,
                                          names_file=names_file)
                    tune_identity(adapter, request, progress=update, basis=basis)
                finally:
                    close()
            files[key] = path
        result.append(files)
    return result


# ---------------------------------------------------------------------------- rendering
def load_variant_tokens(pipe, files_per_variant: Sequence[dict[str, Path]], identities: Identities
                        ) -> list[dict[str, str]]:
    """Load each (variant, identity) file as its own token ``name_vN``; returns tokens by identity name."""
    from ..generate import load_embeddings_into

    tokens, warnings = [], []
    with tempfile.TemporaryDirectory(prefix="celebbasis-eval-") as folder:
        for index, files in enumerate(files_per_variant):
            mine = {}
            for key, path in files.items():
                token = f"{identities.names[key]}_v{index}".lower()
                shutil.copyfile(path, Path(folder) / f"{token}.safetensors")
                mine[identities.names[key]] = token
            tokens.append(mine)
        loaded = set(load_embeddings_into(pipe, folder, warn=warnings.append))
    missing = [token for mine in tokens for token in mine.values() if token not in loaded]
    if missing:
        raise BadInput(warnings[0] if warnings else f"the embedding {missing[0]} could not be loaded")
    return tokens


def diffusers_renderer(pipe, *, steps: int, guidance: float, width=None, height=None, negative: str = ""):
    """``render(item)`` with the pipeline: the item's prompt with its tokens (the same seed, the same image)."""
    from ..generate import generate_image

    def render(item):
        return generate_image(pipe, item.text, negative=negative, steps=steps, seed=item.seed, width=width,
                              height=height, guidance=guidance)

    return render


def seeds_from(count: int, start: int = 0) -> list[int]:
    if isinstance(count, bool) or not 1 <= int(count) <= MAX_SEEDS:
        raise BadInput(f"--seeds must be from 1 to {MAX_SEEDS}, not {count}")
    if int(start) < 0:
        raise BadInput(f"--seed-start must be 0 or more, not {start}")
    return list(range(int(start), int(start) + int(count)))


def check_names(identities: Identities, keys: Sequence[str]) -> None:
    """Tuned identities are named after their photos: each name must be a valid token name."""
    for key in keys:
        try:
            validate_name(identities.names[key])
        except BadInput as error:
            raise BadInput(f"photo {identities.names[key]!r}: its name becomes the identity's name; {error}") from None


def model_label(model: str) -> str:
    return os.path.basename(os.path.normpath(str(model))) or str(model)
