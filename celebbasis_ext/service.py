"""What every front end does, in one place: the tab, the HTTP API and the standalone UI call this.

``CelebBasisService`` holds a way to get the host's current model (a callable
returning a ``ModelAdapter``), the output folder, and the settings, and
offers the verbs the front ends need: ``detect`` (faces in a photo),
``tune`` (photo -> embedding file), ``preview`` (render the new token and
score each render's likeness), ``identities``, ``delete`` and
``check_name``. It imports neither gradio nor any host module, so it is
tested on diffusers alone.

The host plugs itself in with a few callables: ``get_adapter`` (the loaded
model), ``after_save`` (reload embeddings after a file was written or
deleted), ``host_progress`` / ``host_should_cancel`` (the host's progress bar
and Interrupt button), ``render`` (preview images) and ``known_embeddings``
(names the host has loaded from elsewhere). Two tunings never interleave
(``lock``); every path written or deleted stays inside the output folder.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from .errors import BadInput, Cancelled, CelebBasisError
from .identity import output_path, validate_name
from .likeness import face_similarity as _face_similarity
from .likeness import reference_feature, unit_mean
from .pipeline import FACE_ENCODERS, TuneRequest
from .tuning import MODES, TuneOptions, TuneProgress

log = logging.getLogger(__name__)

#: Preset name -> the options it sets (everything else keeps TuneOptions' defaults).
PRESETS: dict[str, dict[str, Any]] = {
    "Fast": {"steps": 200},
    "Balanced": {"steps": 400},
    "Best": {"steps": 800},
}
DEFAULT_PRESET = "Balanced"

#: Options a caller may set besides the preset (front ends expose a subset).
TUNABLE_OPTIONS = ("steps", "learning_rate", "seed", "mode", "batch_size", "dtype", "resolution", "pool_size",
                   "report_every", "augment", "gradient_checkpointing")
_WHOLE_NUMBER_OPTIONS = ("steps", "seed", "batch_size", "resolution", "pool_size", "report_every")

#: Prompts of the preview grid (``{}`` is the new token).
PREVIEW_TEMPLATES = ("a photo of {}", "a close-up portrait photo of {}, smiling", "{} in a park, photo",
                     "an oil painting of {}")
LIKENESS_FILE = "celebbasis-likeness.json"
MAX_PHOTOS = 16
THUMBNAIL_SIZE = 128


class IdentityNotFound(BadInput):
    """The identity to delete or preview has no file in the output folder."""


@dataclass
class ServiceSettings:
    """The user's settings (the WebUI's "CelebBasis" section, or the standalone UI's flags)."""

    face_encoder: str = "auto"
    models_dir: Optional[str] = None
    allow_download: bool = False
    default_preset: str = DEFAULT_PRESET
    save_fp16: bool = False
    names_file: Optional[str] = None
    basis_cache_dir: Optional[str] = None
    webui_root: Optional[str] = None
    preview_count: int = 4
    preview_steps: int = 20
    #: TuneOptions every run starts from, under the preset and the caller's options (e.g. a
    #: smaller ``pool_size`` or ``resolution`` for tiny test models).
    tune_defaults: dict = field(default_factory=dict)


@dataclass
class NameCheck:
    """The verdict on a name typed by the user: ``level`` is ok, warning, error or empty."""

    level: str
    message: str

    @property
    def ok(self) -> bool:
        return self.level in ("ok", "warning")

    def __str__(self) -> str:
        return self.message


@dataclass
class FaceInfo:
    """One detected face: index (largest first), box (x0, y0, x1, y1), score, a square thumbnail."""

    index: int
    box: tuple[float, float, float, float]
    score: float
    thumbnail: Any = None

    def as_dict(self) -> dict:
        return {"index": self.index, "box": [round(v, 1) for v in self.box], "score": round(self.score, 4)}


@dataclass
class _Status:
    busy: bool = False
    name: str = ""
    step: int = 0
    total: int = 0
    loss: Optional[float] = None
    eta_seconds: Optional[float] = None
    started: Optional[float] = None
    message: str = ""


def _value(source):
    return source() if callable(source) else source


def normalize_photo(photo):
    """Photos as front ends hand them over: gradio file objects become their path."""
    if isinstance(photo, dict) and isinstance(photo.get("path") or photo.get("name"), str):
        return photo.get("path") or photo.get("name")  # gradio 4 FileData as a dict
    if isinstance(photo, (str, bytes, bytearray, memoryview, os.PathLike)):
        return photo
    name = getattr(photo, "name", None)
    if not hasattr(photo, "convert") and not hasattr(photo, "shape") and isinstance(name, str) \
            and os.path.isfile(name):
        return name  # gradio 3 tempfile wrapper (may already be closed)
    return photo


def one_line(error: BaseException) -> str:
    """An exception as one line for the user (never a traceback)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return ("out of memory: choose the Fast preset or a smaller resolution, start the WebUI with --medvram, "
                "or close other programs using the GPU")
    if isinstance(error, CelebBasisError):  # written for the user already
        return text
    return text if type(error).__name__ in text else f"{type(error).__name__}: {text}"


class CelebBasisService:
    """See the module docstring."""

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
    ):
        self._get_adapter = get_adapter
        self._out_dir = out_dir
        self._settings = settings if settings is not None else ServiceSettings()
        self.after_save = after_save
        self.render = render
        self.known_embeddings = known_embeddings
        self.host_progress = host_progress
        self.host_should_cancel = host_should_cancel
        self._vocabulary = vocabulary
        self.lock = threading.Lock()
        self._files_lock = threading.Lock()
        self._cancel = threading.Event()
        self._status = _Status()
        self._status_lock = threading.Lock()
        self._references: dict[str, Any] = {}  # name -> face feature of the training photos (memory only)

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> ServiceSettings:
        """The current settings (read anew each time when the service was given a callable)."""
        return _value(self._settings)

    @settings.setter
    def settings(self, value: Union[ServiceSettings, Callable[[], ServiceSettings]]) -> None:
        self._settings = value

    @property
    def out_dir(self) -> Path:
        return Path(_value(self._out_dir)).expanduser().resolve()

    @property
    def presets(self) -> dict[str, TuneOptions]:
        return {name: TuneOptions(**values) for name, values in PRESETS.items()}

    def default_preset(self) -> str:
        preset = self.settings.default_preset
        return preset if preset in PRESETS else DEFAULT_PRESET

    def resolve_face_encoder(self, face_encoder: Optional[str] = None) -> str:
        kind = (face_encoder or "").strip().lower()
        if kind in ("", "default"):
            kind = (self.settings.face_encoder or "auto").strip().lower()
        if kind not in FACE_ENCODERS:
            raise BadInput(f"unknown face encoder {kind!r}: choose one of {', '.join(FACE_ENCODERS)}")
        return kind

    def build_options(self, preset: Optional[str] = None, options: Optional[dict] = None,
                      face_encoder: Optional[str] = None) -> tuple[TuneOptions, str]:
        """The preset's TuneOptions with ``options`` on top, validated; and the face encoder to use."""
        preset = preset or self.default_preset()
        if preset not in PRESETS:
            raise BadInput(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        values = {**self.settings.tune_defaults, **PRESETS[preset]}
        for key, value in (options or {}).items():
            if key not in TUNABLE_OPTIONS:
                raise BadInput(f"unknown option {key!r}: use {', '.join(TUNABLE_OPTIONS)}")
            if value is None or (key == "mode" and value in ("", "auto")):
                continue
            if key in _WHOLE_NUMBER_OPTIONS and isinstance(value, float) and math.isfinite(value) \
                    and value.is_integer():
                value = int(value)  # sliders and number boxes hand over floats
            values[key] = value
        kind = self.resolve_face_encoder(face_encoder)
        if "mode" not in values:
            values["mode"] = "direct" if kind == "none" else "paper"
        if values["mode"] not in MODES:
            raise BadInput(f"unknown mode {values['mode']!r}: choose {' or '.join(MODES)}")
        return TuneOptions(**values).validate(), kind

    # ------------------------------------------------------------------ status and cancel
    def cancel(self) -> None:
        """Ask a running tuning to stop (nothing is written)."""
        self._cancel.set()

    @property
    def busy(self) -> bool:
        return self.lock.locked()

    def progress(self) -> dict:
        """A snapshot for the progress endpoint: busy, name, step, total, loss, eta_seconds, message."""
        with self._status_lock:
            status = replace(self._status)
        return {"busy": status.busy, "name": status.name, "step": status.step, "total": status.total,
                "loss": status.loss, "eta_seconds": status.eta_seconds, "message": status.message,
                "elapsed_seconds": round(time.time() - status.started, 1) if status.started and status.busy else None}

    def _set_status(self, **changes) -> None:
        with self._status_lock:
            for key, value in changes.items():
                setattr(self._status, key, value)

    # ------------------------------------------------------------------ faces
    def face_encoder(self, kind: Optional[str] = None):
        """The loaded face encoder for ``kind`` (default: the settings'); None for 'none'."""
        kind = self.resolve_face_encoder(kind)
        if kind == "none":
            return None
        from .face.encoders import load_face_encoder

        settings = self.settings
        return load_face_encoder(kind, models_dir=settings.models_dir or None, allow_download=settings.allow_download,
                                 webui_root=settings.webui_root or None)

    def detect(self, photo, face_encoder: Optional[str] = None) -> list[FaceInfo]:
        """The faces in one photo, largest first, each with a square thumbnail."""
        encoder = self.face_encoder(face_encoder)
        if encoder is None:
            raise BadInput("face encoder 'none' finds no faces: the whole photo is used (mode 'direct')")
        from .face.encoders import detect_faces
        from .photos import load_photo

        image = load_photo(normalize_photo(photo))
        return [FaceInfo(index, tuple(float(v) for v in face.box), float(face.score), _thumbnail(image, face.box))
                for index, face in enumerate(detect_faces(image, encoder))]

    # ------------------------------------------------------------------ names
    def _is_vocabulary_word(self, name: str) -> Optional[bool]:
        if self._vocabulary is not None:
            return bool(self._vocabulary(name))
        try:
            from .clip_tokenizer import clip_tokenizer

            return len(clip_tokenizer()(name, add_special_tokens=False).input_ids) == 1
        except Exception:  # no tokenizer files: the check is advice only
            return None

    def check_name(self, name: str, overwrite: bool = False) -> NameCheck:
        """Is ``name`` usable as a new token here? Allowed characters, clashes, vocabulary words."""
        name = (name or "").strip()
        if not name:
            return NameCheck("empty", "Type a name for the token, e.g. anna_k")
        try:
            path = output_path(self.out_dir, name)
        except BadInput as error:
            return NameCheck("error", str(error))
        folder = path.parent
        if path.exists():
            if overwrite:
                return NameCheck("warning", f"{path.name} exists and will be replaced")
            return NameCheck("error", f"{path.name} already exists: choose another name or tick overwrite")
        if folder.is_dir():
            for other in folder.glob("*.safetensors"):
                if other.stem.lower() == name.lower():
                    return NameCheck("error", f"'{name}' differs from the existing {other.name} only in case; "
                                              "prompts cannot tell them apart")
        if self.known_embeddings is not None:
            try:
                known = {str(item).lower() for item in self.known_embeddings()}
            except Exception:  # noqa: BLE001 - advice only
                known = set()
            if name.lower() in known:
                return NameCheck("error", f"an embedding called '{name}' is already loaded from another folder; "
                                          "choose another name")
        if self._is_vocabulary_word(name):
            return NameCheck("warning", f"'{name}' is a word the model already knows; the embedding would shadow "
                                        f"it. A rarer name (e.g. {name}_cb) works better")
        return NameCheck("ok", f"'{name}' is free: type {name} in a prompt after training")

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
        from .pipeline import tune_identity

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
            self._set_status(step=update.step, total=update.total, loss=update.loss, eta_seconds=update.eta_seconds)
            for callback in (self.host_progress, progress):
                if callback is not None:
                    callback(update)

        def cancelled() -> bool:
            return self._cancel.is_set() or any(
                callback is not None and callback() for callback in (self.host_should_cancel, should_cancel))

        with self.lock:
            self._cancel.clear()
            self._set_status(busy=True, name=name, step=0, total=tune_options.steps, loss=None, eta_seconds=None,
                             started=time.time(), message="preparing")
            if self.host_progress is not None:  # step 0: the host's bar says "preparing" until the first step
                self.host_progress(TuneProgress(0, tune_options.steps, math.nan, math.nan))
            try:
                try:
                    adapter = self._get_adapter()
                    if adapter is None:
                        raise BadInput("no model is loaded: choose a Stable Diffusion checkpoint first")
                    encoder = self.face_encoder(kind) if kind != "none" else None
                    self._set_status(message="tuning")
                    outcome = tune_identity(adapter, request, progress=report, should_cancel=cancelled,
                                            encoder=encoder)
                except BaseException as error:
                    self._set_status(message="cancelled" if isinstance(error, Cancelled)
                                     else f"failed: {one_line(error)}")
                    raise
                self._set_status(message="saved")
                return self._tuned(name, outcome, photos, likeness)
            finally:
                self._set_status(busy=False)

    def _tuned(self, name: str, outcome, photos, likeness: bool) -> dict:
        """After the file is written: reload hook, the result, and the likeness when asked."""
        warnings = list(outcome.warnings)
        reference = _reference_feature(outcome.faces.features)
        if reference is not None:
            self._references[name.lower()] = reference
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
            "final_loss": _float(metadata.get("final_loss")),
            "face_encoder": outcome.faces.encoder_name,
            "likeness": None,
            "scores": None,
        }
        if likeness:
            self._set_status(message="rendering previews")
            try:
                preview = self._preview_locked(name, photos=photos)
                result["likeness"], result["scores"] = preview["likeness"], preview["scores"]
                if preview.get("note"):
                    warnings.append(preview["note"])
            except Exception as error:  # noqa: BLE001 - the embedding is saved; the score is extra
                log.warning("likeness failed", exc_info=not isinstance(error, BadInput))
                warnings.append(f"no likeness score: {one_line(error)}")
            self._set_status(message="saved")
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

    # ------------------------------------------------------------------ previews and likeness
    def preview(self, name: str, photos: Optional[Sequence] = None, count: Optional[int] = None,
                seed: int = 0, face_index: Optional[int] = None) -> dict:
        """Render the token ``count`` times; score each render's face against the training photo.

        Returns images (PIL), prompts, scores (cosine similarity per render,
        None where no face was found), likeness (their mean, or None) and note.
        """
        with self.lock:
            return self._preview_locked(name, photos=photos, count=count, seed=seed, face_index=face_index)

    def _preview_locked(self, name: str, photos=None, count: Optional[int] = None, seed: int = 0,
                        face_index: Optional[int] = None) -> dict:
        if self.render is None:
            raise BadInput("previews cannot be rendered here")
        name = (name or "").strip()
        path = output_path(self.out_dir, name)
        if not path.is_file():
            raise IdentityNotFound(f"no identity called '{name}' in {self.out_dir}")
        count = int(count or self.settings.preview_count)
        if not 1 <= count <= 16:
            raise BadInput(f"preview count must be from 1 to 16, not {count}")
        templates = [PREVIEW_TEMPLATES[i % len(PREVIEW_TEMPLATES)] for i in range(count)]
        images = list(self.render(path, name, templates, seed))
        prompts = [template.format(name) for template in templates]
        scores, note = [None] * len(images), None
        encoder, reference = None, self._references.get(name.lower())
        try:
            encoder = self._likeness_encoder()
        except BadInput as error:
            note = f"no likeness score: {error}"
        if encoder is not None and reference is None and photos:
            reference, why = self._photo_reference(photos, encoder, face_index)
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
        if mean is not None:
            self._record_likeness(name, mean)
        return {"images": images, "prompts": prompts, "scores": scores, "likeness": mean, "note": note}

    def _likeness_encoder(self):
        kind = self.resolve_face_encoder()
        return self.face_encoder("auto" if kind == "none" else kind)

    def _photo_reference(self, photos, encoder, face_index: Optional[int] = None):
        """The training photos' mean face feature, or (None, the reason none was found)."""
        try:
            photos = [normalize_photo(photo) for photo in photos]
            return reference_feature(photos, encoder, face_index, missing="no face found in the training photo"), None
        except BadInput as error:
            return None, str(error)

    def _likeness_path(self) -> Path:
        return self.out_dir / LIKENESS_FILE

    def _read_likeness(self) -> dict:
        try:
            data = json.loads(self._likeness_path().read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _record_likeness(self, name: str, value: float) -> None:
        with self._files_lock:
            data = self._read_likeness()
            data[name] = {"likeness": value, "measured": _now()}
            _write_json_atomic(self._likeness_path(), data)

    # ------------------------------------------------------------------ the identities made
    def identities(self) -> list[dict]:
        """Every embedding in the output folder, newest first: name, date, base model, likeness, file."""
        folder = self.out_dir
        if not folder.is_dir():
            return []
        likeness = self._read_likeness()
        rows = []
        for path in folder.glob("*.safetensors"):
            if not path.is_file():
                continue
            metadata, error = _read_metadata(path)
            stat = path.stat()
            created = metadata.get("created") or datetime.datetime.fromtimestamp(
                stat.st_mtime, datetime.timezone.utc).replace(microsecond=0).isoformat()
            score = likeness.get(path.stem, {}).get("likeness") if isinstance(likeness.get(path.stem), dict) else None
            rows.append({
                "name": path.stem,
                "date": created,
                "base_model": metadata.get("base_model") or "",
                "family": metadata.get("family") or "",
                "likeness": score,
                "steps": _int(metadata.get("steps")),
                "method": metadata.get("method") or "",
                "file": str(path),
                "error": error,
                "_mtime": stat.st_mtime,
            })
        rows.sort(key=lambda row: (-row["_mtime"], row["name"]))
        for row in rows:
            row.pop("_mtime")
        return rows

    def delete(self, name: str) -> Path:
        """Delete ``out_dir/NAME.safetensors`` (only there); then let the host reload embeddings."""
        name = (name or "").strip()
        validate_name(name)
        path = output_path(self.out_dir, name)  # resolved: a symlink pointing elsewhere is refused
        with self._files_lock:
            if not path.is_file():
                raise IdentityNotFound(f"no identity called '{name}' in {self.out_dir}")
            path.unlink()
            data = self._read_likeness()
            if data.pop(name, None) is not None:
                _write_json_atomic(self._likeness_path(), data)
        self._references.pop(name.lower(), None)
        warnings: list = []
        self._notify_saved(path, warnings)
        for warning in warnings:
            log.warning(warning)
        return path


# ---------------------------------------------------------------------- helpers
def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _float(value) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _read_metadata(path: Path) -> tuple[dict, Optional[str]]:
    """The header metadata of a .safetensors file (never unpickles, reads no tensors)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {}), None
    except Exception as error:  # noqa: BLE001 - listed with a note, not fatal
        return {}, f"unreadable ({type(error).__name__})"


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".celebbasis.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _thumbnail(image, box, size: int = THUMBNAIL_SIZE):
    """A square crop around a face box (with some margin), ``size`` pixels wide."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * 1.4
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = image.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    return crop.resize((size, size))


def _reference_feature(features):
    """The unit mean of the photos' (non-mirrored) face features, or None without a face encoder."""
    if features is None:
        return None
    import numpy as np

    return unit_mean(features[:, 0].detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)[:, 0])


__all__ = ["CelebBasisService", "ServiceSettings", "NameCheck", "FaceInfo", "IdentityNotFound", "PRESETS",
           "DEFAULT_PRESET", "PREVIEW_TEMPLATES", "normalize_photo", "one_line"]
