"""insightface's buffalo_l (SCRFD-10GF detector + ArcFace R50) on onnxruntime alone.

The insightface package is not needed: its model-zoo wrappers pull in extra
dependencies and change between releases, while the two ONNX graphs are
stable. Pre- and post-processing follow insightface's conventions exactly
(letterbox to 640x640 at the top-left, (x-127.5)/128, RGB; distance-decoded
boxes and keypoints at strides 8/16/32 with 2 anchors each, NMS at 0.4), so
features match what other buffalo_l users compute.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..errors import ModelFilesMissing, TuningFailed
from .align import align_arcface
from .types import DetectedFace, FaceEncoder

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

DET_SIZE = (640, 640)
DET_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4

# output count -> (strides, anchors per location, has keypoints); as in insightface
_LAYOUTS = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, else CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: str, providers: Sequence[str] | None = None):
    """An onnxruntime session, with one-line errors for missing or broken files."""
    name = os.path.basename(path)
    try:
        import onnxruntime
    except ImportError:
        raise ModelFilesMissing("onnxruntime is not installed: `pip install onnxruntime` (or onnxruntime-gpu)") from None
    if not os.path.isfile(path):
        raise ModelFilesMissing(f"{name} not found in {os.path.dirname(path) or '.'}")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # no provider-fallback chatter in the console
    try:
        return onnxruntime.InferenceSession(path, sess_options=options, providers=list(providers or default_providers()))
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise ModelFilesMissing(f"cannot load {name} ({first}); delete it and get it again") from None


def _fixed_hw(shape) -> tuple[int, int] | None:
    if shape is None or len(shape) != 4:
        return None
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return height, width
    return None


class ScrfdDetector:
    """SCRFD face detector: letterbox, run, decode anchors, NMS."""

    def __init__(self, session, *, det_size=DET_SIZE, threshold=DET_THRESHOLD, nms_threshold=NMS_THRESHOLD):
        self.session = session
        inputs = session.get_inputs()
        self.input_name = inputs[0].name
        fixed = _fixed_hw(inputs[0].shape)
        self.input_hw = fixed if fixed else (int(det_size[1]), int(det_size[0]))
        count = len(session.get_outputs())
        if count not in _LAYOUTS or not _LAYOUTS[count][2]:
            raise ModelFilesMissing(f"the detector model has {count} outputs; expected SCRFD with keypoints (9 or 15)")
        self.strides, self.anchors, _ = _LAYOUTS[count]
        self.threshold = float(threshold)
        self.nms_threshold = float(nms_threshold)
        self._centres: dict = {}

    def letterbox(self, image_rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """Resize keeping aspect into the top-left of the input canvas; NCHW blob and scale."""
        in_h, in_w = self.input_hw
        height, width = image_rgb.shape[:2]
        ratio = float(height) / width  # same float steps as insightface, so sizes match exactly
        if ratio > float(in_h) / in_w:
            new_h = in_h
            new_w = int(new_h / ratio)
        else:
            new_w = in_w
            new_h = int(new_w * ratio)
        new_w, new_h = max(new_w, 1), max(new_h, 1)
        scale = new_h / height
        if cv2 is not None:
            resized = cv2.resize(image_rgb, (new_w, new_h))
        else:
            resized = np.asarray(Image.fromarray(image_rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))
        canvas = np.zeros((in_h, in_w, 3), dtype=np.float32)
        canvas[:new_h, :new_w] = resized
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(blob, dtype=np.float32), scale

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        blob, scale = self.letterbox(image_rgb)
        outputs = self.session.run(None, {self.input_name: blob})
        boxes, scores, points = self.decode(outputs)
        if len(scores) == 0:
            return []
        boxes, points = boxes / scale, points / scale
        keep = nms(boxes, scores, self.nms_threshold)
        faces = [
            DetectedFace(
                box=tuple(float(v) for v in boxes[i]),
                score=float(scores[i]),
                landmarks=points[i].astype(np.float32),
            )
            for i in keep
        ]
        return sorted(faces, key=lambda face: -face.area)

    def decode(self, outputs: Sequence[np.ndarray]):
        """Boxes (N,4), scores (N,) and keypoints (N,5,2) above threshold, in input pixels.

        Outputs come in graph order: scores for every stride, then box
        distances, then keypoint offsets, each (rows, C) or (1, rows, C), with
        rows = (H/stride) * (W/stride) * anchors, distances in stride units.
        """
        in_h, in_w = self.input_hw
        levels = len(self.strides)
        all_boxes, all_scores, all_points = [], [], []
        for level, stride in enumerate(self.strides):
            scores = _rows(outputs[level], 1, "scores")[:, 0]
            dist = _rows(outputs[level + levels], 4, "boxes") * stride
            offsets = _rows(outputs[level + 2 * levels], 10, "keypoints") * stride
            centres = self._anchor_centres(in_h // stride, in_w // stride, stride)
            if not (len(scores) == len(dist) == len(offsets) == len(centres)):
                raise TuningFailed("the face detector's outputs do not match its input size")
            hit = scores >= self.threshold
            if not np.any(hit):
                continue
            c = centres[hit]
            d = dist[hit]
            all_boxes.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=1))
            all_points.append(c[:, None, :] + offsets[hit].reshape(-1, 5, 2))
            all_scores.append(scores[hit])
        if not all_scores:
            return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))
        return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_points)

    def _anchor_centres(self, rows: int, cols: int, stride: int) -> np.ndarray:
        key = (rows, cols, stride)
        centres = self._centres.get(key)
        if centres is None:
            ys, xs = np.mgrid[:rows, :cols]
            grid = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64) * stride
            centres = np.repeat(grid, self.anchors, axis=0)  # anchors of one location are adjacent rows
            self._centres[key] = centres
        return centres


def _rows(array: np.ndarray, width: int, what: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[1] != width:
        raise TuningFailed(f"the face detector returned {what} of shape {tuple(array.shape)}, expected (N, {width})")
    return array


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best score first."""
    x0, y0, x1, y1 = boxes.T
    areas = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.clip(np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]), 0, None)
        inter = w * h
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= threshold]
    return keep


class ArcFaceEmbedder:
    """ArcFace recogniser: template-aligned crop, (x-127.5)/127.5, RGB, L2-normalised output."""

    def __init__(self, session):
        self.session = session
        inputs = session.get_inputs()
        self.input_name = inputs[0].name
        fixed = _fixed_hw(inputs[0].shape)
        self.size = fixed[0] if fixed else 112
        shape = session.get_outputs()[0].shape
        self.dim = int(shape[-1]) if shape and isinstance(shape[-1], int) else 512

    def embed(self, image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        crop = align_arcface(image_rgb, landmarks, self.size)
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        output = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[0]
        vector = np.asarray(output, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if not np.all(np.isfinite(vector)) or norm <= 1e-12:
            raise TuningFailed("the ArcFace model returned an invalid feature")
        return vector / norm


class InsightFaceEncoder(FaceEncoder):
    """buffalo_l's detector and recogniser behind the ``FaceEncoder`` interface."""

    name = "insightface"

    def __init__(self, det_path: str, rec_path: str, providers: Sequence[str] | None = None, **det_options):
        self.detector = ScrfdDetector(open_session(str(det_path), providers), **det_options)
        self.recogniser = ArcFaceEmbedder(open_session(str(rec_path), providers))
        self.feature_dim = self.recogniser.dim

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        return self.detector.detect(np.ascontiguousarray(image_rgb))

    def embed(self, image_rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        return self.recogniser.embed(np.ascontiguousarray(image_rgb), face.landmarks)
