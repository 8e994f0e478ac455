"""Face detection, alignment and identity features for one photo.

Two interchangeable encoders: insightface's buffalo_l ONNX models (SCRFD
detector + ArcFace, run with onnxruntime alone) and dlib's models as a
permissively licensed fallback. ``extract_face`` turns a photo into a
``FaceSample``: the identity feature plus the head crop used as the
diffusion training target.
"""

from .encoders import detect_faces, extract_face, load_face_encoder
from .registry import ENCODERS
from .types import DetectedFace, FaceEncoder, FaceSample

__all__ = [
    "ENCODERS",
    "DetectedFace",
    "FaceEncoder",
    "FaceSample",
    "detect_faces",
    "extract_face",
    "load_face_encoder",
]
