"""Tiny ONNX models with the real signatures of buffalo_l's det_10g.onnx and w600k_r50.onnx.

No model weights can be downloaded here, so these stand-ins let the whole
insightface path (letterbox, run, decode, NMS, align, embed) run for real with
exactly predictable results:

* The detector "sees" saturated colour patches: a pure red patch covering one
  stride-32 cell of the 640x640 input fires both anchors of that cell, green
  does the same at stride 16 and blue at stride 8. Box distances and keypoint
  offsets are the same constants (in stride units) everywhere, so every face's
  box and landmarks are known in advance.
* The recogniser is a fixed average-pool + linear map to 512 values whose
  output ``arcface_reference`` recomputes in numpy.

Signatures follow the real files: detector input "input.1" (1, 3, ?, ?) and 9
outputs ordered scores (strides 8, 16, 32), boxes, keypoints, each (N, C)
(or (1, N, C) with ``batched=True``), N = (H/s) * (W/s) * 2; recogniser input
"input.1" (N, 3, 112, 112), output "683" (N, 512).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)
CHANNEL_FOR_STRIDE = {8: 2, 16: 1, 32: 0}  # blue, green, red
COLOUR_FOR_STRIDE = {8: (0, 0, 255), 16: (0, 255, 0), 32: (255, 0, 0)}
BOX_DIST = (1.5, 1.0, 2.5, 3.0)  # left, top, right, bottom, in stride units
KPS_OFFSETS = ((0.3, 0.6), (1.4, 0.6), (0.85, 1.2), (0.45, 1.9), (1.25, 1.9))  # in stride units
DET_OUTPUT_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
SHARPNESS, BIAS = 20.0, 30.0  # a patch must cover about 75% of a cell to fire
REC_DIM = 512
REC_POOL = 8


def _model(graph, opset: int = 13) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="celebbasis-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_scrfd_standin(batched: bool = False) -> bytes:
    """Serialized detector stand-in (see module docstring)."""
    nodes, inits = [], []
    outputs = {}
    for stride in STRIDES:
        channel = CHANNEL_FOR_STRIDE[stride]
        weight = np.full((1, 3, stride, stride), -SHARPNESS / 2.0 / stride**2, dtype=np.float32)
        weight[0, channel] = SHARPNESS / stride**2
        inits += [
            numpy_helper.from_array(weight, f"w{stride}"),
            numpy_helper.from_array(np.array([-BIAS], dtype=np.float32), f"b{stride}"),
            numpy_helper.from_array(np.array([[b for b in BOX_DIST]], dtype=np.float32), f"box{stride}"),
            numpy_helper.from_array(np.array([[v for xy in KPS_OFFSETS for v in xy]], dtype=np.float32), f"kps{stride}"),
        ]
        s = str(stride)
        nodes += [
            helper.make_node("Conv", ["input.1", f"w{s}", f"b{s}"], [f"logit{s}"], kernel_shape=[stride, stride], strides=[stride, stride]),
            helper.make_node("Sigmoid", [f"logit{s}"], [f"prob{s}"]),
            helper.make_node("Reshape", [f"prob{s}", "col"], [f"loc{s}"]),  # (h*w, 1), row = y*w + x
            helper.make_node("Concat", [f"loc{s}", f"loc{s}"], [f"pair{s}"], axis=1),  # 2 anchors per location
            helper.make_node("Reshape", [f"pair{s}", "col"], [f"score{s}"]),
            helper.make_node("Mul", [f"score{s}", "zero"], [f"zeros{s}"]),
            helper.make_node("Add", [f"zeros{s}", f"box{s}"], [f"bbox{s}"]),
            helper.make_node("Add", [f"zeros{s}", f"kps{s}"], [f"kpsout{s}"]),
        ]
        outputs[s] = (f"score{s}", f"bbox{s}", f"kpsout{s}")
    inits += [
        numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "col"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    if batched:
        inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"))
    ordered = [outputs[str(s)][0] for s in STRIDES] + [outputs[str(s)][1] for s in STRIDES] + [outputs[str(s)][2] for s in STRIDES]
    graph_outputs = []
    for name, internal, width in zip(DET_OUTPUT_NAMES, ordered, [1, 1, 1, 4, 4, 4, 10, 10, 10]):
        if batched:
            nodes.append(helper.make_node("Unsqueeze", [internal, "axis0"], [name]))
            shape = [1, f"n_{name}", width]
        else:
            nodes.append(helper.make_node("Identity", [internal], [name]))
            shape = [f"n_{name}", width]
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes,
        "scrfd_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        graph_outputs,
        initializer=inits,
    )
    return _model(graph).SerializeToString()


def _rec_weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    features = 3 * (112 // REC_POOL) ** 2
    weight = (rng.standard_normal((features, REC_DIM)) / np.sqrt(features)).astype(np.float32)
    bias = (rng.standard_normal(REC_DIM) * 0.01).astype(np.float32)
    return weight, bias


def build_arcface_standin(seed: int = 0) -> bytes:
    """Serialized recogniser stand-in: AveragePool(8) -> Flatten -> Gemm to 512."""
    weight, bias = _rec_weights(seed)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[REC_POOL, REC_POOL], strides=[REC_POOL, REC_POOL]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", REC_DIM])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    return _model(graph).SerializeToString()


def arcface_reference(aligned_rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the recogniser stand-in returns for an aligned 112x112 RGB crop, L2-normalised."""
    weight, bias = _rec_weights(seed)
    x = (aligned_rgb.astype(np.float32) - 127.5) / 127.5
    x = x.transpose(2, 0, 1)
    pooled = x.reshape(3, 112 // REC_POOL, REC_POOL, 112 // REC_POOL, REC_POOL).mean(axis=(2, 4))
    out = pooled.reshape(-1) @ weight + bias
    return out / np.linalg.norm(out)


def write_buffalo_standins(folder, batched: bool = False):
    """Write det_10g.onnx and w600k_r50.onnx stand-ins into ``folder``; returns the folder."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "det_10g.onnx").write_bytes(build_scrfd_standin(batched))
    (folder / "w600k_r50.onnx").write_bytes(build_arcface_standin())
    return folder


def paint_face_patch(image: np.ndarray, stride: int, cell_x: int, cell_y: int, scale: float) -> None:
    """Paint the colour patch that makes the stand-in fire at one cell.

    ``scale`` is the letterbox factor (input pixels per photo pixel); the
    patch covers exactly the photo area that lands on that cell.
    """
    size = stride / scale
    x0, y0 = int(round(cell_x * stride / scale)), int(round(cell_y * stride / scale))
    image[y0 : y0 + int(round(size)), x0 : x0 + int(round(size))] = COLOUR_FOR_STRIDE[stride]


def expected_face(stride: int, cell_x: int, cell_y: int, scale: float):
    """Box (x0, y0, x1, y1) and (5, 2) landmarks, in photo pixels, for a patch at that cell."""
    cx, cy = cell_x * stride, cell_y * stride  # anchor centres sit at the cell's top-left corner
    left, top, right, bottom = (d * stride for d in BOX_DIST)
    box = np.array([cx - left, cy - top, cx + right, cy + bottom]) / scale
    kps = (np.array([[cx + dx * stride, cy + dy * stride] for dx, dy in KPS_OFFSETS])) / scale
    return box, kps
