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
import math
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


#: What Tune does when NAME.safetensors exists (ComfyUI re-runs a node whose cached result another workflow evicted).
IF_EXISTS = ("error", "overwrite", "use existing")


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
    if_exists: str = "error"

    def request(self, photos, overwrite: bool = False):
        """The engine's ``TuneRequest``, checked (name, options, encoder) before anything heavy runs."""
        from ..pipeline import TuneRequest
        from ..service import PRESETS
        from ..tuning import TuneOptions

        if self.preset not in PRESETS:
            raise BadInput(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if self.if_exists not in IF_EXISTS:
            raise BadInput(f"unknown if_exists {self.if_exists!r}: choose one of {', '.join(IF_EXISTS)}")
        values = {**PRESETS[self.preset], "seed": self.seed,
                  "mode": "direct" if self.face_encoder == "none" else "paper",
                  "resolution": self.resolution or None}
        if self.steps:
            values["steps"] = self.steps
        request = TuneRequest(
            photos=photos, name=(self.name or "").strip(), out_dir=embeddings_dir(), options=TuneOptions(**values),
            face_encoder=self.face_encoder, face_index=None if self.face_index < 0 else self.face_index,
            overwrite=overwrite, models_dir=face_models_dir(), allow_download=False,
        )
        request.validate()
        return request


#: Files this ComfyUI process wrote: path -> (digest of the inputs, size, mtime). An identical run whose
#: cached result ComfyUI dropped finds its own file again instead of failing on "already exists".
_WRITTEN: dict = {}


def _run_key(model, clip, vae, images, inputs: TuneInputs) -> str:
    import hashlib

    digest = hashlib.sha256(repr((inputs.name.strip(), inputs.preset, inputs.steps, inputs.seed, inputs.face_encoder,
                                  inputs.face_index, inputs.resolution)).encode())
    digest.update(repr((id(model.model), getattr(model, "patches_uuid", None), id(clip.cond_stage_model),
                        clip.layer_idx, id(vae.first_stage_model))).encode())
    digest.update(images.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _file_state(path: Path):
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _existing(path: Path, key: str, inputs: TuneInputs, adapter) -> bool:
    """True when ``path`` is to be used as it is; ``BadInput`` when it exists and must not be replaced."""
    from ..identity import load_identity

    if not path.exists() or inputs.if_exists == "overwrite":
        return False
    if _WRITTEN.get(str(path)) == (key, *_file_state(path)):
        log.info("CelebBasis: %s was made from these very inputs in this session; tuning skipped", path.name)
        return True
    if inputs.if_exists == "use existing":
        identity = load_identity(path)
        if identity.family != adapter.family:
            raise BadInput(f"{path.name} was made for {identity.family.value.upper()} and this model is "
                           f"{adapter.family.value.upper()}: choose another name, or set if_exists to overwrite")
        log.info("CelebBasis: using the existing %s (if_exists: use existing); tuning skipped", path.name)
        return True
    raise BadInput(f"{path.name} already exists in {path.parent}: choose another name, or set if_exists to "
                   "overwrite or use existing")


def tune(model, clip, vae, images, inputs: TuneInputs) -> Path:
    """Learn ``inputs.name`` from the photos in ``images`` on MODEL/CLIP/VAE; returns the file written (or kept)."""
    import comfy.model_management as memory
    import comfy.utils
    import torch

    from ..hosts.comfyui import ComfyAdapter
    from ..identity import output_path
    from ..pipeline import tune_identity

    request = inputs.request(image_batch_to_arrays(images), overwrite=True)  # an existing file: decided below
    adapter = ComfyAdapter(model, clip, vae)
    key = _run_key(model, clip, vae, images, inputs)
    if _existing(output_path(request.out_dir, request.name), key, inputs, adapter):
        return output_path(request.out_dir, request.name)
    bar = comfy.utils.ProgressBar(request.options.steps)

    def report(progress) -> None:
        bar.update_absolute(progress.step, progress.total)

    try:
        with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes in inference mode
            outcome = tune_identity(adapter, request, progress=report, should_cancel=memory.processing_interrupted)
    except Cancelled:
        memory.throw_exception_if_processing_interrupted()  # ComfyUI's own "interrupted" ending
        raise
    _WRITTEN[str(outcome.path)] = (key, *_file_state(outcome.path))
    for warning in outcome.warnings:
        log.warning("CelebBasis: %s", warning)
    result = outcome.result
    log.info("CelebBasis: wrote %s in %.1f s (preparing %.1f s, %d steps %.1f s); use embedding:%s in a prompt",
             outcome.path, result.seconds, result.setup_seconds, result.steps, result.loop_seconds, request.name)
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
    """(mean similarity of the images' largest faces to the reference person, a summary line and one line per image).

    Images without a face get no score; when none has one the mean is NaN (a render without the person is
    not a bad input). A reference photo without a usable face is one.
    """
    from ..likeness import face_similarity, reference_feature

    encoder = load_encoder(face_encoder)
    index: Optional[int] = None if reference_face_index < 0 else reference_face_index
    target = reference_feature(image_batch_to_arrays(reference), encoder, index)
    arrays = image_batch_to_arrays(images)
    scores = [face_similarity(pixels, encoder, target) for pixels in arrays]
    found = [score for score in scores if score is not None]
    mean = round(sum(found) / len(found), 4) if found else math.nan
    summary = (f"likeness {mean:.4f} (mean of {len(found)} of {len(arrays)} images with a face)" if found
               else f"no likeness: {_no_face(len(arrays))}")
    lines = [f"image {number}: " + ("no face" if score is None else f"{score:.4f}")
             for number, score in enumerate(scores, 1)]
    return mean, "\n".join([summary, *lines])


def _no_face(count: int) -> str:
    return "no face found in the image" if count == 1 else f"no face found in any of the {count} images"
