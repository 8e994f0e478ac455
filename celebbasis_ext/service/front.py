"""``CelebBasisService``: the one object the tab, the HTTP API and the standalone UI call.

It keeps the host's hooks and the settings, and hands each verb to the part
that does it: ``settings`` (presets, options), ``faces`` (detection),
``identities`` (the files and name checks), ``jobs`` (one job at a time,
cancel, progress, timings) and ``previews`` (renders and likeness). The hooks
are read at call time, so a host (or a test) may replace one later.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from ..errors import BadInput, Cancelled, one_line
from ..pipeline import TuneRequest
from ..tuning import TuneOptions, TuneProgress
from . import faces, jobs, settings as settings_module
from .faces import FaceInfo, normalize_photo
from .identities import IdentityFolder, NameCheck
from .previews import Previews
from .records import as_float
from .settings import ServiceSettings

log = logging.getLogger(__name__)

MAX_PHOTOS = 16


class CelebBasisService:
    """See the package docstring (``celebbasis_ext.service``) for the hooks a host gives."""

    def __init__(
        self,
        get_adapter: Callable[[], Any],
        out_dir: Union[str, os.PathLike, Callable[[], Union[str, os.PathLike]]],
        settings: Union[ServiceSettings, Callable[[], ServiceSettings], None] = None,
        *,
        after_save: Optional[Callable[[Path], None]] = None,
        render: Optional[Callable[..., list]] = None,
        known_embeddings: Optional[Callable[[], Iterable[str]]] = None,
        host_progress: Optional[Callable[[TuneProgress], None]] = None,
        host_should_cancel: Optional[Callable[[], bool]] = None,
        vocabulary: Optional[Callable[[str], bool]] = None,
        host_render_progress: Optional[Callable[[int, int], None]] = None,
        host_interrupt: Optional[Callable[[], None]] = None,
        device: Optional[Callable[[], Any]] = None,
    ):
        self._get_adapter = get_adapter
        self._settings = settings if settings is not None else ServiceSettings()
        self.after_save = after_save
        self.render = render
        self.known_embeddings = known_embeddings
        self.host_progress = host_progress
        self.host_should_cancel = host_should_cancel
        self.host_render_progress = host_render_progress
        self.host_interrupt = host_interrupt
        self.device = device
        self._vocabulary = vocabulary
        self.folder = IdentityFolder(out_dir)
        self.jobs = jobs.Jobs()
        self.previews = Previews(self.folder)

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> ServiceSettings:
        """The current settings (read anew each time when the service was given a callable)."""
        return self._settings() if callable(self._settings) else self._settings

    @settings.setter
    def settings(self, value: Union[ServiceSettings, Callable[[], ServiceSettings]]) -> None:
        self._settings = value

    @property
    def out_dir(self) -> Path:
        return self.folder.path

    @property
    def presets(self) -> dict[str, TuneOptions]:
        return settings_module.presets()

    def default_preset(self) -> str:
        return settings_module.default_preset(self.settings)

    def resolve_face_encoder(self, face_encoder: Optional[str] = None) -> str:
        return settings_module.resolve_face_encoder(self.settings, face_encoder)

    def build_options(self, preset: Optional[str] = None, options: Optional[dict] = None,
                      face_encoder: Optional[str] = None) -> tuple[TuneOptions, str]:
        """The preset's TuneOptions with ``options`` on top, validated; and the face encoder to use."""
        return settings_module.build_options(self.settings, preset, options, face_encoder)

    # ------------------------------------------------------------------ jobs: lock, cancel, progress, timings
    @property
    def lock(self):
        """Held by the running tuning or preview (two never interleave)."""
        return self.jobs.lock

    @property
    def busy(self) -> bool:
        return self.jobs.busy

    def cancel(self) -> None:
        """Ask a running tuning (nothing is written) or preview to stop; the host's sampler too while ours runs."""
        self.jobs.cancel(self.host_interrupt)

    def progress(self) -> dict:
        """A snapshot for the progress endpoint: busy, name, step, total, loss, eta_seconds, message."""
        return self.jobs.progress()

    def tuning_device(self) -> Optional[str]:
        """Where tuning runs ("cpu", "cuda:0", ...), asked of the host without loading a model; None if unknown."""
        if self.device is None:
            return None
        try:
            value = self.device()
        except Exception:  # noqa: BLE001 - advice only
            log.debug("the host's device is unknown", exc_info=True)
            return None
        return None if value is None else str(value)

    def expected_time(self, steps: int) -> Optional[dict]:
        """How long ``steps`` steps should take here, from the last run measured on this kind of device
        (seconds, step_seconds, setup_seconds, name), or None."""
        return jobs.expected_time(self.out_dir, self.tuning_device(), steps)

    # ------------------------------------------------------------------ faces and names
    def face_encoder(self, kind: Optional[str] = None):
        """The loaded face encoder for ``kind`` (default: the settings'); None for 'none'."""
        return faces.load_encoder(self.settings, self.resolve_face_encoder(kind),
                                  download_progress=self._download_progress)

    def _download_progress(self, received: int, total: Optional[int]) -> None:
        """Face models downloading: the progress text says how far (the console shows nothing else)."""
        size = f" of {total / 2**20:.0f} MB" if total else " MB"
        self.jobs.set_status(message=f"downloading face models: {received / 2**20:.0f}{size}")

    def detect(self, photo, face_encoder: Optional[str] = None) -> list[FaceInfo]:
        """The faces in one photo, largest first, each with a square thumbnail."""
        return faces.detect(photo, self.face_encoder(face_encoder))

    def check_name(self, name: str, overwrite: bool = False) -> NameCheck:
        """Is ``name`` usable as a new token here? Allowed characters, clashes, vocabulary words."""
        return self.folder.check_name(name, overwrite, self.known_embeddings, self._vocabulary)

    # ------------------------------------------------------------------ tuning
    def tune(
        self,
        photos: Sequence,
        name: str,
        preset: Optional[str] = None,
        options: Optional[dict] = None,
        face_index: Optional[int] = None,
        overwrite: bool = False,
        progress: Optional[Callable[[TuneProgress], None]] = None,
        should_cancel: Optional[Callable[[], bool]] = None,
        *,
        face_encoder: Optional[str] = None,
        likeness: bool = False,
    ) -> dict:
        """Learn ``name`` from ``photos`` on the current model and write ``out_dir/NAME.safetensors``.

        Returns name, token, file, family, base_model, metadata (without the
        coefficients), warnings, seconds, final_loss, face_encoder, and when
        ``likeness`` is asked (and previews can be rendered) likeness and scores.
        Raises ``BadInput`` (the user's to fix), ``Cancelled`` or a runtime error.
        """
        from ..pipeline import tune_identity

        settings = self.settings
        name = (name or "").strip()
        photos = [normalize_photo(photo) for photo in (photos or [])]
        if len(photos) > MAX_PHOTOS:
            raise BadInput(f"{len(photos)} photos given; use at most {MAX_PHOTOS} photos of one person")
        tune_options, kind = self.build_options(preset, options, face_encoder)
        request = TuneRequest(
            photos=photos, name=name, out_dir=self.out_dir, options=tune_options, face_encoder=kind,
            face_index=face_index, overwrite=bool(overwrite), models_dir=settings.models_dir or None,
            allow_download=settings.allow_download, names_file=settings.names_file or None,
            half=bool(settings.save_fp16), basis_cache_dir=settings.basis_cache_dir or None,
        )
        request.validate()  # cheap checks first: no lock, no model, no photo decoding
        check = self.check_name(name, overwrite)
        if check.level == "error":
            raise BadInput(check.message)

        def report(update: TuneProgress) -> None:
            self.jobs.set_status(step=update.step, total=update.total, loss=update.loss,
                                 eta_seconds=update.eta_seconds)
            for callback in (self.host_progress, progress):
                if callback is not None:
                    callback(update)

        def cancelled() -> bool:
            return self.jobs.cancelled(self.host_should_cancel, should_cancel)

        with self.jobs.running(name, tune_options.steps, "preparing"):
            if self.host_progress is not None:  # step 0: the host's bar says "preparing" until the first step
                self.host_progress(TuneProgress(0, tune_options.steps, math.nan, math.nan))
            try:
                adapter = self._get_adapter()
                if adapter is None:
                    raise BadInput("no model is loaded: choose a Stable Diffusion checkpoint first")
                encoder = self.face_encoder(kind) if kind != "none" else None
                self.jobs.set_status(message="tuning")
                started = time.perf_counter()
                outcome = tune_identity(adapter, request, progress=report, should_cancel=cancelled, encoder=encoder)
                jobs.record_timing(self.out_dir, name, getattr(adapter, "device", None), outcome.result,
                                   time.perf_counter() - started)
            except BaseException as error:
                self.jobs.set_status(message="cancelled" if isinstance(error, Cancelled)
                                     else f"failed: {one_line(error)}")
                raise
            self.jobs.set_status(message="saved")
            return self._tuned(name, outcome, photos, likeness, face_index)

    def _tuned(self, name: str, outcome, photos, likeness: bool, face_index: Optional[int] = None) -> dict:
        """After the file is written: reload hook, the result, and the likeness when asked."""
        warnings = list(outcome.warnings)
        self.folder.forget_likeness(name)  # a replaced file's old score does not describe the new one
        self._remember_reference(name, outcome, photos, face_index)
        self._notify_saved(outcome.path, warnings)
        metadata = {key: value for key, value in outcome.identity.metadata.items() if key != "coefficients"}
        result = {
            "name": name,
            "token": name,
            "file": str(outcome.path),
            "family": outcome.identity.family.value,
            "base_model": metadata.get("base_model"),
            "metadata": metadata,
            "warnings": warnings,
            "seconds": round(outcome.result.seconds, 2),
            "final_loss": as_float(metadata.get("final_loss")),
            "face_encoder": outcome.faces.encoder_name,
            "likeness": None,
            "scores": None,
        }
        if likeness:
            self.jobs.set_status(message="rendering previews")
            try:
                preview = self._preview_locked(name, photos=photos)
                result["likeness"], result["scores"] = preview["likeness"], preview["scores"]
                if preview.get("note"):
                    warnings.append(preview["note"])
            except Exception as error:  # noqa: BLE001 - the embedding is saved; the score is extra
                log.warning("likeness failed", exc_info=not isinstance(error, BadInput))
                warnings.append(f"no likeness score: {one_line(error)}")
            self.jobs.set_status(message="saved")
        return result

    def _notify_saved(self, path: Path, warnings: list) -> None:
        if self.after_save is None:
            return
        try:
            self.after_save(path)
        except Exception as error:  # noqa: BLE001 - the file is fine; say what did not work
            log.exception("reloading embeddings failed")
            warnings.append(f"saved, but reloading the embeddings failed ({one_line(error)}); "
                            "use the Refresh button of the embeddings list")

    # ------------------------------------------------------------------ previews
    def preview(self, name: str, photos: Optional[Sequence] = None, count: Optional[int] = None,
                seed: int = 0, face_index: Optional[int] = None) -> dict:
        """Render the token ``count`` times; score each render's face against the training photo.

        Returns images (PIL), prompts, scores (cosine similarity per render,
        None where no face was found), likeness (their mean, or None) and note.
        """
        with self.jobs.running((name or "").strip(), 0, "rendering previews"):
            try:
                return self._preview_locked(name, photos=photos, count=count, seed=seed, face_index=face_index)
            except Cancelled:
                self.jobs.set_status(message="preview interrupted")
                raise

    def _preview_locked(self, name: str, photos=None, count: Optional[int] = None, seed: int = 0,
                        face_index: Optional[int] = None) -> dict:
        def on_image(index: int, total: int) -> None:
            self.jobs.set_status(message=f"rendering preview {index + 1}/{total}")
            if self.host_render_progress is not None:
                self.host_render_progress(index, total)

        return self.previews.render_and_score(
            name, int(count or self.settings.preview_count), seed, render=self.render,
            likeness_judge=self.likeness_judge, photos=photos, face_index=face_index,
            cancelled=lambda: self.jobs.cancelled(self.host_should_cancel), on_image=on_image)

    # ------------------------------------------------------------------ likeness, as celebbasis eval scores it
    def likeness_judge(self, path):
        """The face model that scores an identity's renders: the same choice as ``celebbasis eval --judge auto``
        (a model other than the one it was tuned with, when one is available)."""
        from ..evaluate.scoring import choose_judge, tuned_with
        from ..identity import load_identity

        return choose_judge([tuned_with(load_identity(path).metadata)], "auto", load=self.face_encoder)

    def likeness_reference(self, name: str, judge, photos=None, face_index: Optional[int] = None):
        """The judge's feature of an identity's training photos (remembered from tuning here, else read from
        ``photos``), or (None, why not)."""
        return self.previews.reference(name, judge, photos, face_index)

    def _remember_reference(self, name: str, outcome, photos, face_index: Optional[int]) -> None:
        """The judge's feature of the training photos, for previews without the photo (memory only)."""
        from ..evaluate.scoring import features_reference, photo_reference

        self.previews.forget(name)
        try:
            judge = self.likeness_judge(outcome.path)
            if judge.name == outcome.faces.encoder_name:
                reference = features_reference(outcome.faces.features)
            else:
                reference, _ = photo_reference(photos, judge.encoder, face_index)
        except Exception:  # noqa: BLE001 - no judge here: previews will say so
            log.debug("no likeness reference for %s", name, exc_info=True)
            return
        self.previews.remember(name, judge.name, reference)

    def run_exclusive(self, name: str, job: Callable[[Callable[[], bool]], Any]):
        """``job(should_cancel)`` as one job (never beside a tuning or preview); Interrupt, ours or the host's,
        stops it."""
        with self.jobs.running(name, 0, "evaluating"):
            return job(lambda: self.jobs.cancelled(self.host_should_cancel))

    @property
    def _references(self) -> dict:
        """Name -> (judge, the training photos' face feature), kept in memory after a tuning."""
        return self.previews.references

    # ------------------------------------------------------------------ the identities made
    def identities(self) -> list[dict]:
        """Every embedding in the output folder, newest first: name, date, base model, likeness, file."""
        return self.folder.list()

    def delete(self, name: str) -> Path:
        """Delete ``out_dir/NAME.safetensors`` (only there); then let the host reload embeddings."""
        path = self.folder.delete(name)
        self.previews.forget((name or "").strip())
        warnings: list = []
        self._notify_saved(path, warnings)
        for warning in warnings:
            log.warning(warning)
        return path
