"""The face encoders this extension can run, by name, in the order "auto" tries them.

One table answers the same questions for the loader and for ``celebbasis doctor``:
where an encoder's files are (``find``), whether it can run here (``available``),
how to load it (``load``) and how a user gets it (``how_to_get``). Each encoder
module imports only ``types``; this module imports them, and nothing imports it
back except the front (``encoders``), so there is no import circle.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import dlib_encoder, model_files
from .types import FaceEncoder

PathLike = Optional[os.PathLike]
DownloadProgress = Callable[[int, int | None], None]
"""Called with (bytes received, total bytes or None) while model files download."""


@dataclass(frozen=True)
class EncoderEntry:
    """One face encoder: how to find, load and get it."""

    name: str
    find: Callable[[PathLike, PathLike], Path | None]
    """The folder holding its model files, or None when they (or its package) are missing."""
    load: Callable[..., FaceEncoder]
    """``load(models_dir, webui_root, allow_download=False, providers=None, progress=True)``; raises ModelFilesMissing."""
    how_to_get: Callable[[PathLike, PathLike], str]
    """What a user does to make it available, one clause (joined into the "no encoder" message)."""
    packages: tuple[tuple[str, str], ...] = ()
    """(module, pip package) pairs it needs besides numpy/Pillow."""
    get_files: str = ""
    """The one command that puts its model files in place (shown by ``celebbasis doctor``)."""
    downloads: bool = False
    """``load`` can fetch missing files itself when downloads are allowed."""

    def available(self, models_dir: PathLike = None, webui_root: PathLike = None) -> bool:
        return self.find(models_dir, webui_root) is not None

    def missing_packages(self) -> list[str]:
        """pip names of the packages it needs that are not installed."""
        return [pip_name for module, pip_name in self.packages if importlib.util.find_spec(module) is None]


# ---------------------------------------------------------------- insightface (buffalo_l on onnxruntime)


def _find_insightface(models_dir: PathLike, webui_root: PathLike) -> Path | None:
    return model_files.find_buffalo_l(models_dir, webui_root)


def _load_insightface(models_dir: PathLike, webui_root: PathLike = None, allow_download: bool = False,
                      providers: Sequence[str] | None = None, progress=True) -> FaceEncoder:
    from .insightface_encoder import (
        InsightFaceEncoder,  # local: onnxruntime/cv2 only when used
    )

    folder = model_files.ensure_buffalo_l(models_dir, webui_root, allow_download=allow_download, progress=progress)
    det_name, rec_name = model_files.REQUIRED_FILES
    return InsightFaceEncoder(os.path.join(folder, det_name), os.path.join(folder, rec_name), providers=providers)


def _get_insightface(models_dir: PathLike, webui_root: PathLike) -> str:
    dirs = ", ".join(str(path) for path in model_files.candidate_dirs(models_dir, webui_root))
    return f"put buffalo_l's det_10g.onnx and w600k_r50.onnx in one of {dirs}, or allow downloads"


# ---------------------------------------------------------------- dlib (pip-installable fallback)


def _find_dlib(models_dir: PathLike, webui_root: PathLike) -> Path | None:
    if not dlib_encoder.dlib_available(models_dir):
        return None
    files = dlib_encoder.find_dlib_models(models_dir)
    return Path(files[dlib_encoder.RECOGNITION]).parent if files else None


def _load_dlib(models_dir: PathLike, webui_root: PathLike = None, allow_download: bool = False,
               providers: Sequence[str] | None = None, progress=True) -> FaceEncoder:
    return dlib_encoder.DlibEncoder.from_models_dir(models_dir)


def _get_dlib(models_dir: PathLike, webui_root: PathLike) -> str:
    return f"`{DLIB_INSTALL}`"


DLIB_INSTALL = "pip install dlib-bin face_recognition_models"

ENCODERS: dict[str, EncoderEntry] = {
    "insightface": EncoderEntry(
        name="insightface",
        find=_find_insightface,
        load=_load_insightface,
        how_to_get=_get_insightface,
        packages=(("onnxruntime", "onnxruntime"),),
        get_files="celebbasis download face-models",
        downloads=True,
    ),
    "dlib": EncoderEntry(
        name="dlib",
        find=_find_dlib,
        load=_load_dlib,
        how_to_get=_get_dlib,
        packages=(("dlib", "dlib-bin"), ("face_recognition_models", "face_recognition_models")),
        get_files=DLIB_INSTALL,
    ),
}
"""Name -> entry, in the order "auto" prefers them (ArcFace first: the paper's encoder)."""
