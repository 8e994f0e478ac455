"""Many identities at once: one per photo, or one per sub-folder of photos.

Identities are tuned in groups that share each UNet batch (``tune_group``),
which keeps a GPU busier than one run after another. Names come from the file
or folder names, made safe; a person whose photo fails (no face, ...) is
reported and skipped, the others go on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .errors import BadInput, CelebBasisError
from .identity import Identity, output_path, save_identity, validate_name
from .pipeline import prepare_faces, resolve_loss_mask
from .tuning import Subject, TuneOptions, tune_group

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class BatchSubject:
    name: str
    photos: list[Path]


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    identities_per_minute: float = 0.0
    sequential_identities_per_minute: Optional[float] = None


def safe_name(raw: str) -> str:
    """A file or folder name turned into an allowed token name."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_-")[:64] or "person"
    return validate_name(name if name[0].isalnum() else "p" + name[:63])


def find_subjects(folder: str | Path) -> list[BatchSubject]:
    """Photos directly in ``folder`` are one person each; each sub-folder is one person."""
    root = Path(folder)
    if not root.is_dir():
        raise BadInput(f"no such folder: {root}")
    subjects, seen = [], set()
    for entry in sorted(root.iterdir()):
        if entry.is_file() and entry.suffix.lower() in PHOTO_SUFFIXES:
            subjects.append(BatchSubject(safe_name(entry.stem), [entry]))
        elif entry.is_dir() and not entry.name.startswith("."):
            photos = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
            if photos:
                subjects.append(BatchSubject(safe_name(entry.name), photos))
    for subject in subjects:
        if subject.name.lower() in seen:
            raise BadInput(f"two people would get the name {subject.name!r}; rename a file or folder")
        seen.add(subject.name.lower())
    if not subjects:
        raise BadInput(f"no photos in {root} (looked for {', '.join(sorted(PHOTO_SUFFIXES))})")
    return subjects


def tune_batch(adapter, basis, subjects: list[BatchSubject], out_dir, options: TuneOptions, face_encoder: str = "auto",
               group_size: int = 4, overwrite: bool = False, compare: bool = False, models_dir=None,
               allow_download: bool = False, log: Callable[[str], None] = print) -> BatchReport:
    """Tune every subject, ``group_size`` identities per batch; write NAME.safetensors for each."""
    report = BatchReport()
    options = resolve_loss_mask(options, face_encoder)  # what the files record, and no face mask without a face
    ready: list[tuple[BatchSubject, Subject, str]] = []
    encoder = None
    if face_encoder != "none":
        from .face.encoders import load_face_encoder

        encoder = load_face_encoder(face_encoder, models_dir=models_dir, allow_download=allow_download)
    for subject in subjects:
        path = output_path(out_dir, subject.name)
        if path.exists() and not overwrite:
            report.skipped[subject.name] = f"{path.name} already exists"
            continue
        try:
            faces = prepare_faces(subject.photos, face_encoder, encoder=encoder)
        except CelebBasisError as error:
            report.skipped[subject.name] = str(error)
            log(f"skipped {subject.name}: {error}")
            continue
        ready.append((subject, Subject(faces.photos or faces.head_crops, faces.features), faces.encoder_name))

    started = time.perf_counter()
    for first in range(0, len(ready), group_size):
        group = ready[first : first + group_size]
        results = tune_group(adapter, basis, [item[1] for item in group], options)
        for (subject, _, encoder_name), result in zip(group, results):
            identity = Identity.from_embedding(
                subject.name, adapter.family, result.embedding, adapter.encoder_widths, result.coefficients,
                base_model=adapter.model_name or None, base_fingerprint=basis.fingerprint, steps=options.steps,
                seed=options.seed, mode=options.mode, face_encoder=encoder_name, photos=len(subject.photos),
                views=options.views, loss_mask=options.loss_mask,
                batch_identities=len(group),
            )
            report.written.append(save_identity(identity, out_dir, overwrite=overwrite))
            log(f"wrote {report.written[-1]}")
    report.seconds = time.perf_counter() - started
    if report.written:
        report.identities_per_minute = 60 * len(report.written) / report.seconds
    if compare and ready:
        group = ready[:group_size]
        started = time.perf_counter()
        for _, subject, _ in group:
            tune_group(adapter, basis, [subject], options)
        report.sequential_identities_per_minute = 60 * len(group) / (time.perf_counter() - started)
    return report
