"""FaceNet in int8: static quantisation (per-channel, QDQ) calibrated on real faces the package ships.

Calibration needs real face crops, and an installed package has neither sample_data/ (it is in the
repository, not in the wheel) nor ../shared. So the 21 faces MTCNN finds in sample_data/ ship as
`calibration_faces.npz` (160x160 crops exactly as the scan makes them, 1.3 MB): the package can
quantise on any machine, offline, and always the same way. `python benchmarks/calibration_faces.py
sample_data` makes the file again from the photos; tests/models/test_onnx_models.py checks it still
matches them. Each crop and its mirror image calibrate (42 inputs).

The stem convolution and the bottleneck stay in fp32 (see `_kept_in_fp32`). Weights are signed
int8 in 7 bits (`reduce_range`): on CPUs without AVX-512 VNNI (this AMD EPYC
has AVX2 only) ONNX Runtime multiplies uint8 x int8 with VPMADDUBSW, whose int16 sums saturate
with full-range weights: cosine to fp32 fell to 0.36 on some LFW faces. With 7-bit weights it is
>= 0.997 everywhere, and the cached file is right on whichever CPU later reads it.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facebatch.errors import FacebatchError
from facebatch.models.facenet import to_model_input

if TYPE_CHECKING:
    from facebatch.models.onnx_models import OnnxModel

CALIBRATION_FILE = "calibration_faces.npz"
# Part of the int8 file's name: a change to how it is quantised must not reuse an older cached file.
RECIPE = "qdq-minmax-r7-stem-bottleneck-fp32"
# The quantised model must keep every calibration face this close to fp32 (cosine), or it is refused.
MIN_COSINE = 0.99


def calibration_faces() -> np.ndarray:
    """(N, 160, 160, 3) uint8: the faces of sample_data/, shipped with the package."""
    return shipped_crops("faces")


def shipped_crops(key: str) -> np.ndarray:
    """One array of the calibration file: `faces` (FaceNet's crops) or `sface` (aligned for SFace)."""
    with resources.files("facebatch.models").joinpath(CALIBRATION_FILE).open("rb") as handle:
        return np.load(handle)[key]


def quantize_facenet(fp32: OnnxModel) -> bytes:
    """The int8 model's bytes, from the fp32 export; checked against it on the calibration faces."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    faces = calibration_faces()
    inputs = to_model_input(np.concatenate([faces, faces[:, :, ::-1]]))

    with tempfile.TemporaryDirectory(prefix="facebatch-quantize-") as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(str(fp32.path), str(prepared))  # shapes and fused ops, as the quantiser expects
        quantize_static(str(prepared), str(quantized), face_by_face(inputs, "input"), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=_kept_in_fp32(prepared))
        data = quantized.read_bytes()
    _check_quantized(fp32, data, inputs)
    return data


def face_by_face(inputs: np.ndarray, name: str) -> Any:
    """ONNX Runtime's calibration reader over `inputs`, one face a batch (the percentile calibrator
    stacks the batches, which must be one shape), fed as the graph's input `name`."""
    from onnxruntime.quantization import CalibrationDataReader

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: inputs[i : i + 1]} for i in range(len(inputs))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    return Faces()


def _kept_in_fp32(model: Path) -> list[str]:
    """The stem convolution (it reads the pixels) and the bottleneck (it writes the embedding): in
    int8 they cost 0.2 points of lfw-dev pair accuracy (98.45% against fp32's 98.63%); kept in fp32,
    98.70%, at the same speed (benchmarks/model_runtimes.py)."""
    import onnx

    nodes = onnx.load(str(model), load_external_data=False).graph.node
    stem = next(node.name for node in nodes if node.op_type == "Conv")
    return [stem] + [node.name for node in nodes if node.op_type in ("Gemm", "MatMul")]


def _check_quantized(fp32: OnnxModel, data: bytes, inputs: np.ndarray) -> None:
    import onnxruntime

    reference = fp32.session(threads=1).run(None, {"input": inputs})[0]
    quantized = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"input": inputs})[0]
    cosine = float(np.min(np.sum(_unit(reference) * _unit(quantized), axis=1)))
    if cosine < MIN_COSINE:
        raise FacebatchError(f"the int8 FaceNet strays from fp32 (cosine {cosine:.3f} < {MIN_COSINE}) on this "
                             "machine's ONNX Runtime: use --precision fp32")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- making the calibration file


def calibration_crops_from(folder: Path, model: str = "facenet") -> np.ndarray:
    """The crop of every face MTCNN finds in the photos under `folder`, in path order, made as the
    scan makes them for `model` (FaceNet's 160x160 box crop; SFace's 112x112 aligned face), with
    torch detection, so the file doesn't depend on the ONNX export.
    benchmarks/calibration_faces.py writes them as the package's calibration file."""
    from facebatch.config import DetectionSettings
    from facebatch.imageload import read_photo_bytes
    from facebatch.models.catalog import model_named
    from facebatch.models.detection import FaceDetector
    from facebatch.models.embedding import ModelEmbedder
    from facebatch.models.faces import FacePipeline

    cropper = FacePipeline(FaceDetector(DetectionSettings()), ModelEmbedder(model_named(model), None, [], "crops only"))  # type: ignore[arg-type]
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return np.stack([crops[0] for photo in photos for crops in cropper.find_faces(read_photo_bytes(str(photo)))[2]])
