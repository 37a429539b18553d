"""facebatch.models.onnx_models and quantize: FaceNet in ONNX Runtime gives torch's embeddings (fp32 to
1e-4, int8 to cosine >= 0.99) on real faces; the files are cached, checksummed and made again when
damaged; verify runs without importing torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PROJECT, SAMPLE_DATA, dataset
from facebatch.errors import FacebatchError
from facebatch.models import onnx_models as O
from facebatch.models.facenet import FaceEmbedder, OnnxFaceEmbedder, face_crop
from facebatch.models.quantize import calibration_crops_from, calibration_faces
from facebatch.models.weights import facebatch_home, resolve_weights


@pytest.fixture(scope="module")
def weights():
    return resolve_weights()


@pytest.fixture(scope="module")
def torch_embedder(weights) -> FaceEmbedder:
    torch.set_num_threads(2)
    return FaceEmbedder(weights, batch_size=8)


def onnx_embedder(weights, precision: str) -> OnnxFaceEmbedder:
    models = O.prepare_onnx_models(weights, precision)
    return OnnxFaceEmbedder(weights, models.facenet, precision, threads=2, batch_size=8)


@pytest.fixture(scope="module")
def lfw_crops() -> np.ndarray:
    """Central-face crops of 60 lfw-dev photos, as the scan makes them (skips without ../shared)."""
    from facebatch.config import DetectionSettings
    from facebatch.imageload import decode_photo
    from facebatch.models.detection import FaceDetector
    from facebatch.people.verification import central_face

    detector = FaceDetector(DetectionSettings())
    crops = []
    for path in sorted((dataset("lfw-dev") / "images").rglob("*.jpg"))[::50][:60]:
        data = path.read_bytes()
        photo = decode_photo(data)
        if faces := detector.detect(photo):
            face = faces[central_face(faces, photo.width, photo.height)]
            crops.append(face_crop(photo, face.box))  # a full-size decode: no second one needed
    return np.stack(crops)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_onnx_fp32_matches_torch_to_1e4_on_real_faces(weights, torch_embedder):
    faces = calibration_faces()
    got, expected = onnx_embedder(weights, "fp32").embed(faces), torch_embedder.embed(faces)
    assert got.shape == (len(faces), 512) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-4


def test_int8_keeps_cosine_099_on_real_faces(weights, torch_embedder):
    faces = calibration_faces()
    got = onnx_embedder(weights, "int8").embed(faces)
    assert cosines(got, torch_embedder.embed(faces)).min() >= 0.99
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_onnx_on_lfw_faces_the_calibration_never_saw(weights, torch_embedder, lfw_crops):
    expected = torch_embedder.embed(lfw_crops)
    assert np.abs(onnx_embedder(weights, "fp32").embed(lfw_crops) - expected).max() < 1e-4
    assert cosines(onnx_embedder(weights, "int8").embed(lfw_crops), expected).min() >= 0.99


def test_no_crops_no_embeddings(weights):
    assert onnx_embedder(weights, "fp32").embed(np.zeros((0, 160, 160, 3), np.uint8)).shape == (0, 512)


def test_shipped_calibration_faces_are_sample_datas_faces():
    shipped = calibration_faces()
    made = calibration_crops_from(SAMPLE_DATA)
    assert shipped.shape == made.shape == (21, 160, 160, 3) and shipped.dtype == np.uint8
    assert np.abs(shipped.astype(int) - made.astype(int)).max() <= 1
    from facebatch.models.sface import calibration_faces as sface_faces

    shipped, made = sface_faces(), calibration_crops_from(SAMPLE_DATA, "sface")  # SFace's, aligned
    assert shipped.shape == made.shape == (21, 112, 112, 3) and shipped.dtype == np.uint8
    assert np.abs(shipped.astype(int) - made.astype(int)).max() <= 1


@pytest.fixture
def small_home(tmp_path, monkeypatch) -> Path:
    """A FACEBATCH_HOME with the converted weights (copied: no conversion) and no ONNX file yet."""
    source = facebatch_home() / "weights"
    resolve_weights()
    monkeypatch.setenv("FACEBATCH_HOME", str(tmp_path / "home"))
    shutil.copytree(source, tmp_path / "home" / "weights")
    return tmp_path / "home"


def test_nets_are_made_once_and_made_again_when_damaged(small_home, caplog):
    key = O.mtcnn_checksum()[:12]
    with caplog.at_level("INFO", logger="facebatch.models"):
        made = {name: O._cached_or_made(f"mtcnn-{key}-{name}-{O.MTCNN_RECIPE}.onnx", lambda n=name: O.export_mtcnn_net(n))
                for name in O.MTCNN_NETS}
    # What the CLI prints while a new user's first command prepares the models (not silence).
    assert [r.getMessage() for r in caplog.records] == [
        f"preparing mtcnn-{key}-{name}-{O.MTCNN_RECIPE}.onnx, first run only (it can take a minute)"
        for name in O.MTCNN_NETS]
    manifest = json.loads((small_home / "onnx" / "manifest.json").read_text())
    assert {m.path.name for m in made.values()} == set(manifest)
    pnet = made["pnet"]
    assert O._cached_or_made(pnet.path.name, lambda: pytest.fail("a good cached file is made again")) == pnet
    pnet.path.write_bytes(pnet.path.read_bytes()[:-10])  # cut short, as a full disk or a partial copy leaves it
    with pytest.raises(FacebatchError, match="changed since it was checked"):
        pnet.session(threads=1)
    again = O._cached_or_made(pnet.path.name, lambda: O.export_mtcnn_net("pnet"))
    assert again.sha256 == O.hashlib.sha256(again.path.read_bytes()).hexdigest()
    again.session(threads=1)


def test_verify_imports_no_torch(tmp_path):
    O.prepare_onnx_models(resolve_weights(), "int8")  # made in this process (with torch) if missing
    code = ("import sys\nfrom facebatch.cli import cli_main\n"
            f"sys.argv = ['facebatch', 'verify', {str(SAMPLE_DATA / 'people/barack_obama/1.jpg')!r}, "
            f"{str(SAMPLE_DATA / 'people/barack_obama/2.jpg')!r}]\n"
            "try:\n    cli_main()\nexcept SystemExit as exit:\n    print('exit', exit.code)\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert "same person" in out.stdout and "exit 0" in out.stdout, out.stdout + out.stderr
    assert out.stdout.strip().endswith("no torch")
