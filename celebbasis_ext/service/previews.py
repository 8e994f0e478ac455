"""Preview renders of a new token, each scored against the face of the training photos.

The likeness of a render is the cosine similarity of its largest face's
feature to the training photos' mean feature (``reference``), measured by
the judge ``celebbasis eval`` would choose (``evaluate.scoring``: a face
model other than the one the identity was tuned with, when one is
available), so the tab's number and the report's mean the same. The
reference comes from the tuning itself (kept in memory per name and judge),
else from photos uploaded again. Every measured preview is recorded for the
identities table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import BadInput, Cancelled, TuningFailed
from ..evaluate.scoring import face_likeness, photo_reference
from .faces import normalize_photo
from .identities import IdentityFolder


#: Prompts of the preview grid (``{}`` is the new token).
PREVIEW_TEMPLATES = ("a photo of {}", "a close-up portrait photo of {}, smiling", "{} in a park, photo",
                     "an oil painting of {}")
MAX_PREVIEWS = 16


class Previews:
    """See the module docstring; ``references``: name (lower case) -> (judge, the training photos' unit mean
    feature by that judge)."""

    def __init__(self, folder: IdentityFolder):
        self.folder = folder
        self.references: dict[str, tuple[str, Any]] = {}

    def remember(self, name: str, judge: str, reference) -> None:
        """The judge's feature of the tuned photos (memory only)."""
        self.forget(name)
        if reference is not None:
            self.references[name.lower()] = (judge, reference)

    def reference(self, name: str, judge, photos: Optional[Sequence] = None, face_index: Optional[int] = None):
        """The judge's feature of an identity's training photos: remembered from tuning, else read from
        ``photos``; or (None, why not)."""
        cached = self.references.get(name.lower())
        if cached is not None and cached[0] == judge.name:
            return cached[1], None
        if photos:
            return photo_reference([normalize_photo(photo) for photo in photos], judge.encoder, face_index)
        return None, "upload the training photo again to compare"

    def forget(self, name: str) -> None:
        self.references.pop(name.lower(), None)

    def render_and_score(self, name: str, count: int, seed: int, *, render: Optional[Callable[..., list]],
                         likeness_judge: Callable[[Path], Any], photos: Optional[Sequence] = None,
                         face_index: Optional[int] = None, cancelled: Callable[[], bool] = lambda: False,
                         on_image: Optional[Callable[[int, int], None]] = None) -> dict:
        """Render ``name`` ``count`` times (image ``i`` with seed ``seed + i``) and score each render.

        ``render(path, name, [template], seed)`` draws one image; ``on_image(i, count)`` is told before each;
        ``cancelled()`` is asked between them; ``likeness_judge(path)`` gives the judge. Returns images (PIL),
        prompts, scores (per render, None where no face was found), likeness (their mean, or None), note and
        judge (the face model's name).
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
        scores, note, judge, reference = [None] * len(images), None, None, None
        try:
            judge = likeness_judge(path)
        except BadInput as error:
            note = f"no likeness score: {error}"
        if judge is not None:
            reference, why = self.reference(name, judge, photos, face_index)
            if reference is None:
                note = f"no likeness score: {why}"
        if reference is not None:
            scores = [face_likeness(image, judge.encoder, reference) for image in images]
            if all(score is None for score in scores):
                note = "no face found in the previews"
        found = [score for score in scores if score is not None]
        mean = round(sum(found) / len(found), 4) if found else None
        if reference is not None:  # measured: a score, or "no face in the previews"
            self.folder.record_likeness(name, mean, None if found else note)
        return {"images": images, "prompts": prompts, "scores": scores, "likeness": mean, "note": note,
                "judge": judge.name if judge is not None else None}


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
