"""facebatch.models.sface_int8: the rewritten graph computes what SFace computes, the int8 file keeps
faces it was never calibrated on where fp32 puts them, and a model that strays is refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import dataset
from facebatch.config import ModelSettings, runtime_and_precision, still_made
from facebatch.errors import FacebatchError
from facebatch.models import sface as S
from facebatch.models import sface_int8 as Q


@pytest.fixture(scope="module")
def plain() -> bytes:
    return S.plain_sface(S.sface_bytes())


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    """prepare_sface("int8") in a FACEBATCH_HOME of its own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEBATCH_HOME", str(tmp_path_factory.mktemp("sface-int8-home")))
        yield S.prepare_sface("int8")


@pytest.fixture(scope="module")
def unseen_faces() -> np.ndarray:
    """Aligned faces of lfw-many people (one photo each of 24), which the calibration never saw."""
    from facebatch.config import DetectionSettings
    from facebatch.imageload import decode_photo
    from facebatch.models.detection import FaceDetector

    folder = dataset("lfw-many") / "images"
    detector = FaceDetector(DetectionSettings())
    crops = []
    for person in sorted(p for p in folder.iterdir() if p.is_dir())[:24]:
        photo = decode_photo(sorted(person.iterdir())[0].read_bytes())
        faces = detector.detect(photo)
        if faces:
            best = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            crops.append(S.aligned_face(photo, best.landmarks))
    return np.stack(crops)


def embed(data: bytes, crops: np.ndarray) -> np.ndarray:
    x = S._session(data).run(None, {"data": S.to_model_input(crops)})[0]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_rewrite_computes_what_sface_computes(plain):
    """Folding, equalising and PReLU as z + relu(-(1 - a) z) change no output (to float rounding)."""
    faces = S.calibration_faces()
    inputs = S.to_model_input(np.concatenate([faces, faces[:, :, ::-1]]))
    model = onnx.load_from_string(plain)
    Q._fold_batchnorms(model.graph)
    Q._equalise(model, inputs)
    Q._prelus_as_residuals(model.graph)
    ops = {node.op_type for node in model.graph.node}
    assert "PRelu" not in ops
    expected = S._session(plain).run(None, {"data": inputs[:8]})[0]
    got = S._session(model.SerializeToString()).run(None, {"data": inputs[:8]})[0]
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_int8_keeps_unseen_faces_where_fp32_puts_them(plain, int8, unseen_faces):
    model = onnx.load(str(int8.path))
    assert "PRelu" not in {node.op_type for node in model.graph.node}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in model.graph.initializer)  # int8 weights
    assert int8.path.name == f"sface-{S.SFACE_SHA256[:12]}-int8-{Q.RECIPE}.onnx"
    reference = embed(plain, unseen_faces)
    vectors = S.OnnxSFaceEmbedder(int8, threads=2).embed(unseen_faces)
    cosine = np.sum(reference * vectors, axis=1)
    assert len(unseen_faces) >= 20 and cosine.mean() > 0.98 and cosine.min() > 0.9, cosine  # measured 0.99, 0.96
    # every face stays nearer its own fp32 embedding than any other person's
    assert (np.argmax(vectors @ reference.T, axis=1) == np.arange(len(vectors))).all()


def test_a_model_that_strays_from_fp32_is_refused_in_one_line(plain):
    model = onnx.load_from_string(plain)
    gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
    weight = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    scrambled = np.random.default_rng(0).permutation(onnx.numpy_helper.to_array(weight).reshape(-1))
    weight.CopyFrom(onnx.numpy_helper.from_array(scrambled.reshape(tuple(weight.dims)), weight.name))
    faces = S.to_model_input(S.calibration_faces()[:6])
    with pytest.raises(FacebatchError, match="--precision fp32") as caught:
        Q._check(plain, model.SerializeToString(), faces)
    assert "\n" not in str(caught.value)


def test_sface_runs_in_int8_in_onnx_runtime_alone_or_beside_facenet():
    assert ModelSettings().sface_precision == "int8"  # the default
    assert ModelSettings(precision="fp32").sface_precision == "fp32"
    assert ModelSettings("torch", "fp32").sface_precision == "fp32"
    assert ModelSettings(embedding="facenet+sface").sface_precision == "int8"
    # The fused model's variant says so: under onnx-int8 its SFace ran in fp32.
    assert ModelSettings(embedding="facenet+sface").variant == "onnx-int8-sface-int8"
    assert ModelSettings(precision="fp32", embedding="facenet+sface").variant == "onnx-fp32"
    assert ModelSettings("torch", "fp32", "facenet+sface").variant == "torch-fp32"
    assert ModelSettings().variant == "onnx-int8" and ModelSettings(embedding="facenet").variant == "onnx-int8"
    assert runtime_and_precision("onnx-int8-sface-int8") == ("onnx", "int8")
    # What options can still make: not the fused model's SFace in fp32 beside an int8 FaceNet.
    assert not still_made("onnx-int8", "facenet+sface")
    assert all(still_made(variant, model) for variant, model in [
        ("onnx-int8-sface-int8", "facenet+sface"), ("onnx-fp32", "facenet+sface"), ("torch-fp32", "facenet+sface"),
        ("onnx-int8", "sface"), ("onnx-int8", "facenet"), ("torch-fp32", "facenet")])
