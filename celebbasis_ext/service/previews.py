"""Preview renders of a new token, each scored against the face of the training photos.

The likeness of a render is the cosine similarity of its largest face's
feature to the training photos' mean feature (``reference``). The reference
comes from the tuning itself (kept in memory per name), else from photos
uploaded again. Every measured preview is recorded for the identities table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import BadInput, Cancelled, TuningFailed
from ..likeness import face_similarity as _face_similarity
from ..likeness import reference_feature, unit_mean
from .faces import normalize_photo
from .identities import IdentityFolder


#: Prompts of the preview grid (``{}`` is the new token).
PREVIEW_TEMPLATES = ("a photo of {}", "a close-up portrait photo of {}, smiling", "{} in a park, photo",
                     "an oil painting of {}")
MAX_PREVIEWS = 16


class Previews:
    """See the module docstring; ``references``: name (lower case) -> the training photos' unit mean feature."""

    def __init__(self, folder: IdentityFolder):
        self.folder = folder
        self.references: dict[str, Any] = {}

    def remember(self, name: str, features) -> None:
        """The tuned photos' face features (as the pipeline returns them; None without a face encoder)."""
        reference = _reference_feature(features)
        if reference is not None:
            self.references[name.lower()] = reference

    def forget(self, name: str) -> None:
        self.references.pop(name.lower(), None)

    def render_and_score(self, name: str, count: int, seed: int, *, render: Optional[Callable[..., list]],
                         likeness_encoder: Callable[[], Any], photos: Optional[Sequence] = None,
                         face_index: Optional[int] = None, cancelled: Callable[[], bool] = lambda: False,
                         on_image: Optional[Callable[[int, int], None]] = None) -> dict:
        """Render ``name`` ``count`` times (image ``i`` with seed ``seed + i``) and score each render.

        ``render(path, name, [template], seed)`` draws one image; ``on_image(i, count)`` is told before each;
        ``cancelled()`` is asked between them. Returns images (PIL), prompts, scores (per render, None where no
        face was found), likeness (their mean, or None) and note.
        """
        if render is None:
            raise BadInput("previews cannot be rendered here")
        name = (name or "").strip()
        path = self.folder.file_of(name)
        if not 1 <= count <= MAX_PREVIEWS:
            raise BadInput(f"preview count must be from 1 to {MAX_PREVIEWS}, not {count}")
        templates = [PREVIEW_TEMPLATES[i % len(PREVIEW_TEMPLATES)] for i in range(count)]
        images = _render_each(path, name, templates, seed, render, cancelled, on_image)
        prompts = [template.format(name) for template in templates]
        scores, note = [None] * len(images), None
        encoder, reference = None, self.references.get(name.lower())
        try:
            encoder = likeness_encoder()
        except BadInput as error:
            note = f"no likeness score: {error}"
        if encoder is not None and reference is None and photos:
            reference, why = _photo_reference(photos, encoder, face_index)
            if reference is None:
                note = f"no likeness score: {why}"
        if encoder is not None and reference is None and note is None:
            note = "no likeness score: upload the training photo again to compare"
        if encoder is not None and reference is not None:
            scores = [_face_similarity(image, encoder, reference) for image in images]
            if all(score is None for score in scores):
                note = "no face found in the previews"
        found = [score for score in scores if score is not None]
        mean = round(sum(found) / len(found), 4) if found else None
        if encoder is not None and reference is not None:  # measured: a score, or "no face in the previews"
            self.folder.record_likeness(name, mean, None if found else note)
        return {"images": images, "prompts": prompts, "scores": scores, "likeness": mean, "note": note}


def _render_each(path: Path, name: str, templates: list, seed: int, render, cancelled, on_image) -> list:
    """One render call per image: the host's bar counts images, and Interrupt stops between (and, through the
    host's sampler, within) them. Image ``i`` uses seed ``seed + i``, as one batch of ``len(templates)`` would."""
    images = []
    for index, template in enumerate(templates):
        if cancelled():
            raise Cancelled("preview interrupted")
        if on_image is not None:
            on_image(index, len(templates))
        images.extend(render(path, name, [template], seed + index)[:1])
    if cancelled():  # the host's sampler returns a half-done image when interrupted: show none
        raise Cancelled("preview interrupted")
    if not images:
        raise TuningFailed("no preview image was rendered (is a model loaded?)")
    return images


def _photo_reference(photos, encoder, face_index: Optional[int] = None):
    """The training photos' mean face feature, or (None, the reason none was found)."""
    try:
        photos = [normalize_photo(photo) for photo in photos]
        return reference_feature(photos, encoder, face_index, missing="no face found in the training photo"), None
    except BadInput as error:
        return None, str(error)


def _reference_feature(features):
    """The unit mean of the photos' (non-mirrored) face features, or None without a face encoder."""
    if features is None:
        return None
    import numpy as np

    return unit_mean(features[:, 0].detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)[:, 0])
