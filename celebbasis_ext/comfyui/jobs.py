"""What the CelebBasis nodes do: the engine's verbs with ComfyUI's folders, progress bar and Interrupt.

``tune`` writes ``NAME.safetensors`` into ComfyUI's first embeddings folder,
where every CLIP Text Encode finds it as ``embedding:NAME`` (ComfyUI reads
embedding files from disk at each encode, so nothing needs reloading).
Progress goes to ``comfy.utils.ProgressBar``; ComfyUI's Interrupt stops the
run between two steps (``comfy.model_management``), and then nothing is
written and the model is as it was. ``faces`` and ``likeness`` run the same
face encoders and scorer as the WebUI tab. ComfyUI modules are imported when
a node runs, never at load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import BadInput, Cancelled, NoFaceFound
from .images import arrays_to_image_batch, image_batch_to_arrays

log = logging.getLogger("celebbasis")

#: Side of the face crops the Faces node shows.
FACE_CROP_SIZE = 256


def embeddings_dir() -> Path:
    """ComfyUI's first embeddings folder (``models/embeddings`` unless extra_model_paths says otherwise)."""
    import folder_paths

    return Path(folder_paths.get_folder_paths("embeddings")[0])


def face_models_dir() -> str:
    """``models/insightface`` of ComfyUI: buffalo_l is looked for there (and in its ``models/buffalo_l``)."""
    import folder_paths

    return os.path.join(folder_paths.models_dir, "insightface")


def load_encoder(kind: str):
    """A face encoder found on disk; never downloads inside ComfyUI."""
    from ..face.encoders import load_face_encoder

    return load_face_encoder(kind, models_dir=face_models_dir(), allow_download=False)


@dataclass
class TuneInputs:
    """The Tune node's widget values, as given."""

    name: str
    preset: str
    steps: int = 0
    seed: int = 23
    face_encoder: str = "auto"
    face_index: int = -1
    resolution: int = 0
    overwrite: bool = False

    def request(self, photos):
        """The engine's ``TuneRequest``, checked (name, options, encoder) before anything heavy runs."""
        from ..pipeline import TuneRequest
        from ..service import PRESETS
        from ..tuning import TuneOptions

        if self.preset not in PRESETS:
            raise BadInput(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[self.preset], "seed": self.seed,
                  "mode": "direct" if self.face_encoder == "none" else "paper",
                  "resolution": self.resolution or None}
        if self.steps:
            values["steps"] = self.steps
        request = TuneRequest(
            photos=photos, name=(self.name or "").strip(), out_dir=embeddings_dir(), options=TuneOptions(**values),
            face_encoder=self.face_encoder, face_index=None if self.face_index < 0 else self.face_index,
            overwrite=self.overwrite, models_dir=face_models_dir(), allow_download=False,
        )
        request.validate()
        return request


def tune(model, clip, vae, images, inputs: TuneInputs) -> Path:
    """Learn ``inputs.name`` from the photos in ``images`` on MODEL/CLIP/VAE; returns the file written."""
    import comfy.model_management as memory
    import comfy.utils
    import torch

    from ..hosts.comfyui import ComfyAdapter
    from ..pipeline import tune_identity

    request = inputs.request(image_batch_to_arrays(images))
    adapter = ComfyAdapter(model, clip, vae)
    bar = comfy.utils.ProgressBar(request.options.steps)

    def report(progress) -> None:
        bar.update_absolute(progress.step, progress.total)

    try:
        with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes in inference mode
            outcome = tune_identity(adapter, request, progress=report, should_cancel=memory.processing_interrupted)
    except Cancelled:
        memory.throw_exception_if_processing_interrupted()  # ComfyUI's own "interrupted" ending
        raise
    for warning in outcome.warnings:
        log.warning("CelebBasis: %s", warning)
    log.info("CelebBasis: wrote %s (%.1f s); use embedding:%s in a prompt", outcome.path, outcome.result.seconds,
             request.name)
    return outcome.path


def faces(images, face_encoder: str):
    """Every face of every image, largest first per image: (IMAGE batch of head crops, one line per face)."""
    from ..face.align import head_crop
    from ..face.encoders import detect_faces

    encoder = load_encoder(face_encoder)
    crops, lines = [], []
    arrays = image_batch_to_arrays(images)
    for number, pixels in enumerate(arrays, 1):
        found = detect_faces(pixels, encoder, label=f"image {number}")
        if not found:
            lines.append(f"image {number}: no face")
        for index, face in enumerate(found):
            crops.append(head_crop(pixels, face, FACE_CROP_SIZE))
            lines.append(f"image {number}: face_index {index}" + (" (largest)" if index == 0 else ""))
    if not crops:
        raise NoFaceFound(_no_face(len(arrays)))
    return arrays_to_image_batch(crops), "\n".join(lines)


def likeness(images, reference, face_encoder: str, reference_face_index: int = -1):
    """(mean similarity of each image's largest face to the reference person, one line per image)."""
    from ..likeness import face_similarity, reference_feature

    encoder = load_encoder(face_encoder)
    index: Optional[int] = None if reference_face_index < 0 else reference_face_index
    target = reference_feature(image_batch_to_arrays(reference), encoder, index)
    arrays = image_batch_to_arrays(images)
    scores = [face_similarity(pixels, encoder, target) for pixels in arrays]
    found = [score for score in scores if score is not None]
    if not found:
        raise NoFaceFound(_no_face(len(arrays)) + " to score")
    lines = [f"image {number}: " + ("no face" if score is None else f"{score:.4f}")
             for number, score in enumerate(scores, 1)]
    return round(sum(found) / len(found), 4), "\n".join(lines)


def _no_face(count: int) -> str:
    return "no face found in the image" if count == 1 else f"no face found in any of the {count} images"
