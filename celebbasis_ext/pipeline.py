"""One identity, end to end: photo -> face -> feature -> coefficients -> embedding -> file.

This is the single entry point the CLI, the WebUI tab and the HTTP API call.
Everything cheap is validated before anything expensive runs, so bad input
costs nothing and changes nothing; the file is written last, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from .adapter import ModelAdapter
from .augment import FacePhoto
from .basis import DEFAULT_K, CelebBasis, basis_for
from .errors import BadInput
from .identity import Identity, output_path, save_identity
from .tuning import DEFAULT_LOSS_MASK, LOSS_MASK_AUTO, TuneOptions, TuneProgress, TuneResult, tune

FACE_ENCODERS = ("auto", "insightface", "dlib", "none")


def resolve_loss_mask(options: TuneOptions, face_encoder: str) -> TuneOptions:
    """``options`` with an "auto" loss mask made concrete for ``face_encoder`` (what the file records): the
    default, or 'none' where no face encoder finds the face."""
    if options.loss_mask != LOSS_MASK_AUTO:
        return options
    return replace(options, loss_mask="none" if face_encoder == "none" else DEFAULT_LOSS_MASK)


@dataclass
class TuneRequest:
    """What the user asked for (the same fields in CLI flags, tab controls and API JSON)."""

    photos: Sequence
    name: str
    out_dir: Union[str, Path]
    options: TuneOptions = field(default_factory=TuneOptions)
    face_encoder: str = "auto"
    face_index: Optional[int] = None
    overwrite: bool = False
    models_dir: Optional[str] = None
    allow_download: bool = False
    names_file: Optional[str] = None
    k: int = DEFAULT_K
    half: bool = False
    basis_cache_dir: Optional[str] = None

    def validate(self) -> Path:
        """Check everything that needs no model or photo decoding; return the output path."""
        path = output_path(self.out_dir, self.name)
        if path.exists() and not self.overwrite:
            raise BadInput(f"{path.name} already exists in {path.parent}; choose another name or allow overwriting")
        self.options.validate()
        if self.face_encoder not in FACE_ENCODERS:
            raise BadInput(f"unknown face encoder {self.face_encoder!r}: choose one of {', '.join(FACE_ENCODERS)}")
        if self.face_encoder == "none" and self.options.mode != "direct":
            raise BadInput("face encoder 'none' works only with mode 'direct'")
        if self.face_encoder == "none" and self.options.loss_mask == "face":
            raise BadInput("loss mask 'face' needs a face encoder to find the face; use loss mask 'none' "
                           "with face encoder 'none'")
        if not self.photos:
            raise BadInput("no photo given")
        if self.face_index is not None and (isinstance(self.face_index, bool) or not isinstance(self.face_index, int)
                                            or self.face_index < 0):
            raise BadInput(f"face index must be a whole number from 0, not {self.face_index!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 4096:
            raise BadInput(f"K must be from 1 to 4096, not {self.k!r}")
        return path


@dataclass
class PreparedFaces:
    """The photos reduced to what tuning needs: head crops, and features (photo, mirror, D).

    ``photos`` holds, per photo, the head crop with the photo's own framing and
    where the face lies in each (what the training views are cut from).
    """

    head_crops: list
    features: Optional[torch.Tensor]
    samples: list
    encoder_name: str
    photos: list = field(default_factory=list)


@dataclass
class TuneOutcome:
    path: Path
    identity: Identity
    basis: CelebBasis
    result: TuneResult
    faces: PreparedFaces
    warnings: list[str] = field(default_factory=list)


def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mirrored_feature(image, sample, encoder) -> np.ndarray:
    """The identity feature of the mirrored face (the paper's flip augmentation, seen by the encoder)."""
    array = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, ::-1])
    width = array.shape[1]
    x0, y0, x1, y1 = sample.box
    target = (width - x1, y0, width - x0, y1)
    faces = encoder.detect(array)
    if not faces:
        return sample.feature
    best = max(faces, key=lambda face: _iou(face.box, target))
    if _iou(best.box, target) < 0.3:
        return sample.feature
    return encoder.embed(array, best)


def center_square(image, size: int = 512):
    """Without a face encoder (direct mode) the photo itself, centre-cropped, is the target."""
    from PIL import ImageOps

    return ImageOps.fit(image.convert("RGB"), (size, size))


def prepare_faces(photos: Sequence, encoder_kind: str = "auto", face_index: Optional[int] = None,
                  models_dir=None, allow_download: bool = False, encoder=None) -> PreparedFaces:
    """Decode each photo, find the face, crop the head, compute features (plain and mirrored)."""
    from .photos import load_photo

    images = [load_photo(photo) for photo in photos]
    if encoder is None and encoder_kind == "none":
        # no face is known: the centre square is the target, and its centre stands in for the face
        squares = [center_square(image) for image in images]
        return PreparedFaces(squares, None, [], "none", [FacePhoto(square, (0.25, 0.25, 0.75, 0.75))
                                                          for square in squares])
    from .face.encoders import extract_face, load_face_encoder

    if encoder is None:
        encoder = load_face_encoder(encoder_kind, models_dir=models_dir, allow_download=allow_download)
    samples, features = [], []
    for image in images:
        sample = extract_face(image, encoder, face_index=face_index)
        samples.append(sample)
        features.append(np.stack([sample.feature, mirrored_feature(image, sample, encoder)]))
    tensor = torch.from_numpy(np.stack(features).astype(np.float32))
    return PreparedFaces([sample.head_crop for sample in samples], tensor, samples, encoder.name,
                         [face_photo(sample) for sample in samples])


def face_photo(sample) -> FacePhoto:
    """What views are cut from, out of one ``FaceSample``: head crop, framing, and the face in each."""
    if sample.head_face is None:
        return FacePhoto(sample.head_crop)
    return FacePhoto(sample.head_crop, sample.head_face, sample.framing, sample.framing_face)


def tune_identity(
    adapter: ModelAdapter,
    request: TuneRequest,
    progress: Optional[Callable[[TuneProgress], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    encoder=None,
    basis: Optional[CelebBasis] = None,
) -> TuneOutcome:
    """Learn ``request.name`` from ``request.photos`` on the loaded model and write the file."""
    request.validate()
    warnings = []
    if adapter.is_single_token_word(request.name):
        warnings.append(f"'{request.name}' is a word the model already knows: the embedding will shadow it, "
                        "and diffusers refuses such names; consider a rarer name")
    faces = prepare_faces(request.photos, request.face_encoder if encoder is None else "given",
                          request.face_index, request.models_dir, request.allow_download, encoder)
    if basis is None:
        basis = basis_for(adapter, request.names_file, request.k, request.basis_cache_dir)
    options = resolve_loss_mask(request.options, faces.encoder_name)
    features = faces.features if options.mode == "paper" else None
    result = tune(adapter, basis, faces.photos or faces.head_crops, features, options, progress, should_cancel)
    identity = Identity.from_embedding(
        request.name, adapter.family, result.embedding, adapter.encoder_widths, result.coefficients,
        base_model=adapter.model_name or None, base_fingerprint=basis.fingerprint,
        steps=options.steps, seed=options.seed, mode=options.mode, learning_rate=options.learning_rate,
        views=options.views if options.augment else "none", loss_mask=options.loss_mask,
        batch_size=options.batch_size, resolution=options.resolution or adapter.resolution,
        face_encoder=faces.encoder_name, photos=len(faces.head_crops),
        final_loss=round(sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), 6),
    )
    path = save_identity(identity, request.out_dir, overwrite=request.overwrite, half=request.half)
    return TuneOutcome(path, identity, basis, result, faces, warnings)
