"""dlib's face models as a permissively licensed, pip-installable fallback encoder.

Detection is dlib's HOG detector; its least confident hits are confirmed by
dlib's CNN (MMOD) detector on a small crop, which removes HOG's classic false
positives (badges, patches) at a fraction of the cost of running the CNN on
the whole photo. Landmarks come from the 68-point model when present (exact
eye centres and mouth corners), else from the 5-point model with the mouth
estimated. Identity is dlib's 128-d ResNet descriptor, L2-normalised.

The model files ship in the ``face_recognition_models`` package; it is located
with importlib and never imported, because importing it needs pkg_resources,
which current setuptools no longer provides.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ModelFilesMissing
from .types import DetectedFace, FaceEncoder

SHAPE_5 = "shape_predictor_5_face_landmarks.dat"
SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"

DETECT_MAX_SIDE = 1280
"""Photos are detected at most this large (HOG cost grows with area); landmarks
and features still use the full-resolution photo."""

CONFIDENT_SCORE = 0.5
"""HOG hits scoring below this are confirmed by the CNN detector (when available)."""

_VERIFY_FACE_PX = 100  # face size in the verification crop: above MMOD's 80 px window
_INSTALL_HINT = "`pip install dlib-bin face_recognition_models`"


def _package_models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def find_dlib_models(models_dir: os.PathLike | None = None) -> dict | None:
    """Paths of the dlib model files (a folder of ours first, then the package), or None.

    Needs the recognition model and one landmark model; the 68-point and CNN
    models are used when present.
    """
    folders = []
    if models_dir:
        folders += [Path(models_dir).expanduser(), Path(models_dir).expanduser() / "dlib"]
    package = _package_models_dir()
    if package is not None:
        folders.append(package)
    for folder in folders:
        files = {name: folder / name for name in (SHAPE_5, SHAPE_68, RECOGNITION, CNN_DETECTOR) if (folder / name).is_file()}
        if RECOGNITION in files and (SHAPE_5 in files or SHAPE_68 in files):
            return files
    return None


def dlib_available(models_dir: os.PathLike | None = None) -> bool:
    """True when dlib imports and its model files are found."""
    if importlib.util.find_spec("dlib") is None:
        return False
    return find_dlib_models(models_dir) is not None


def landmarks_from_68(points: np.ndarray) -> np.ndarray:
    """insightface-order 5 points from dlib's 68: eye contour means, nose tip, mouth corners.

    In the 68-point scheme points 36-41 outline the image-left eye, 42-47 the
    image-right one, 30 is the nose tip and 48/54 the mouth corners.
    """
    points = np.asarray(points, dtype=np.float64)
    return np.array(
        [points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30], points[48], points[54]], dtype=np.float32
    )


def landmarks_from_5(points: np.ndarray) -> np.ndarray:
    """insightface-order 5 points from dlib's 5-point model (an approximation).

    dlib's 5 points are the two corners of each eye (0-1 image-right eye, 2-3
    image-left eye) and the base of the nose (4). Eye centres are the corner
    midpoints; nose tip and mouth centre are placed along the line from the
    eye midpoint through the nose base (at 0.72x and 1.28x its length) and
    the mouth corners 0.45 eye-distance either side of it, parallel to the
    eyes. The ratios are averages measured against dlib's 68-point model on
    sample faces; expect a few pixels of error on the mouth, which only the
    display crop and head-crop framing use.
    """
    points = np.asarray(points, dtype=np.float64)
    eye_left = points[2:4].mean(axis=0)
    eye_right = points[0:2].mean(axis=0)
    eye_mid = (eye_left + eye_right) / 2.0
    down = points[4] - eye_mid
    along = eye_right - eye_left
    nose = eye_mid + 0.72 * down
    mouth = eye_mid + 1.28 * down
    half_width = 0.45 * along
    return np.array([eye_left, eye_right, nose, mouth - half_width, mouth + half_width], dtype=np.float32)


class DlibEncoder(FaceEncoder):
    """HOG (+CNN check) detection, 68/5-point landmarks, 128-d ResNet descriptor."""

    name = "dlib"
    feature_dim = 128

    def __init__(self, files: dict):
        try:
            import dlib
        except ImportError:
            raise ModelFilesMissing(f"dlib is not installed: {_INSTALL_HINT}") from None
        self._dlib = dlib
        try:
            self._hog = dlib.get_frontal_face_detector()
            self._shape68 = dlib.shape_predictor(str(files[SHAPE_68])) if SHAPE_68 in files else None
            self._shape5 = dlib.shape_predictor(str(files[SHAPE_5])) if SHAPE_5 in files else None
            self._recogniser = dlib.face_recognition_model_v1(str(files[RECOGNITION]))
            self._cnn = dlib.cnn_face_detection_model_v1(str(files[CNN_DETECTOR])) if CNN_DETECTOR in files else None
        except (RuntimeError, KeyError) as exc:
            raise ModelFilesMissing(f"cannot load dlib's face models ({str(exc)[:120]}); reinstall face_recognition_models") from None
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe

    @classmethod
    def from_models_dir(cls, models_dir: os.PathLike | None = None) -> DlibEncoder:
        if importlib.util.find_spec("dlib") is None:
            raise ModelFilesMissing(f"dlib is not installed: {_INSTALL_HINT}")
        files = find_dlib_models(models_dir)
        if files is None:
            raise ModelFilesMissing(f"dlib's face model files were not found: {_INSTALL_HINT}")
        return cls(files)

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
        small, factor = _downscale(image, DETECT_MAX_SIDE)
        with self._lock:
            hits = self._hog_hits(small)
            faces = []
            for rect, score in hits:
                box = (rect.left() * factor, rect.top() * factor, (rect.right() + 1) * factor, (rect.bottom() + 1) * factor)
                if score < CONFIDENT_SCORE and not self._confirmed(image, box):
                    continue
                full_rect = self._rect(box)
                faces.append(DetectedFace(box=tuple(float(v) for v in box), score=float(score), landmarks=self._landmarks(image, full_rect)))
        return sorted(faces, key=lambda face: -face.area)

    def embed(self, image_rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        image = np.ascontiguousarray(image_rgb, dtype=np.uint8)
        with self._lock:
            rect = self._rect(face.box)
            predictor = self._shape5 or self._shape68  # the descriptor model was trained on 5-point alignment
            shape = predictor(image, rect)
            vector = np.asarray(self._recogniser.compute_face_descriptor(image, shape), dtype=np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _hog_hits(self, image: np.ndarray):
        """HOG with one upsampling; small photos get a second try at two."""
        rects, scores, _ = self._hog.run(image, 1, 0.0)
        if not rects and max(image.shape[:2]) < 800:
            rects, scores, _ = self._hog.run(image, 2, 0.0)
        return list(zip(rects, scores))

    def _confirmed(self, image: np.ndarray, box) -> bool:
        """Ask the CNN detector about a doubtful HOG hit, on a crop scaled to ~100 px faces."""
        if self._cnn is None:
            return True
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0)
        margin = 0.35 * side
        height, width = image.shape[:2]
        left, top = int(max(0, x0 - margin)), int(max(0, y0 - margin))
        right, bottom = int(min(width, x1 + margin)), int(min(height, y1 + margin))
        crop = image[top:bottom, left:right]
        if crop.size == 0:
            return False
        scale = _VERIFY_FACE_PX / max(side, 1.0)
        size = (max(1, int(round(crop.shape[1] * scale))), max(1, int(round(crop.shape[0] * scale))))
        crop = np.ascontiguousarray(np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR)))
        return len(self._cnn(crop, 0)) > 0

    def _landmarks(self, image: np.ndarray, rect) -> np.ndarray:
        if self._shape68 is not None:
            shape = self._shape68(image, rect)
            return landmarks_from_68(np.array([(p.x, p.y) for p in shape.parts()]))
        shape = self._shape5(image, rect)
        return landmarks_from_5(np.array([(p.x, p.y) for p in shape.parts()]))

    def _rect(self, box):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        return self._dlib.rectangle(x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))


def _downscale(image: np.ndarray, max_side: int):
    """Shrink for detection only; returns the image and the factor back to full size."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return image, 1.0
    factor = longest / max_side
    size = (max(1, int(round(width / factor))), max(1, int(round(height / factor))))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    return np.ascontiguousarray(small), width / size[0]
