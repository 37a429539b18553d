"""facebatch.models.weights: graph conversion matches OpenCV DNN; caching, checksums and errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import dataset
from facebatch.models import weights as W
from facebatch.errors import FacebatchError

N_FACES = 6
TOLERANCE = 1e-5


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def casia_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FACEBATCH_HOME holding a freshly converted casia-webface.pt (converted once per module)."""
    home = tmp_path_factory.mktemp("facebatch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEBATCH_HOME", str(home))
        W.resolve_weights("casia-webface")
    return home


@pytest.fixture
def home(casia_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACEBATCH_HOME", str(casia_home))
    return casia_home


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACEBATCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def casia_model(casia_home: Path) -> torch.nn.Module:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEBATCH_HOME", str(casia_home))
        return W.load_embedding_model(W.resolve_weights("casia-webface"))


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """N_FACES real LFW faces, one per person, preprocessed as the project does: NCHW float32."""
    cv2 = pytest.importorskip("cv2")
    lfw = dataset("lfw-dev") / "images"
    people = sorted(p for p in lfw.iterdir() if p.is_dir())[:N_FACES]
    crops = []
    for person in people:
        bgr = cv2.imread(str(sorted(person.glob("*.jpg"))[0]))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[45:205, 45:205]  # LFW faces are centred in 250x250
        crops.append(cv2.resize(rgb, (160, 160), interpolation=cv2.INTER_LINEAR))
    x = (np.stack(crops).astype(np.float32) - 127.5) / 128.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def opencv_embeddings(faces: np.ndarray) -> np.ndarray:
    """The reference: OpenCV DNN running the original TF graph, one face at a time (batch 1 is baked in)."""
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromTensorflow(str(W.facenet_graph_path()))
    out = []
    for face in faces:
        net.setInput(face[None])
        out.append(np.array(net.forward(), dtype=np.float32).reshape(-1))
    return np.stack(out)


# --------------------------------------------------------------------------- conversion equivalence


def test_each_face_matches_opencv(casia_model: torch.nn.Module, faces: np.ndarray,
                                  opencv_embeddings: np.ndarray) -> None:
    with torch.no_grad():
        for face, ref in zip(faces, opencv_embeddings, strict=True):
            emb = casia_model(torch.from_numpy(face[None])).numpy()[0]
            assert emb.shape == (512,)
            assert np.abs(emb - ref).max() < TOLERANCE


def test_batch_matches_per_face_opencv(casia_model: torch.nn.Module, faces: np.ndarray,
                                       opencv_embeddings: np.ndarray) -> None:
    with torch.no_grad():
        emb = casia_model(torch.from_numpy(faces)).numpy()
    assert emb.shape == (N_FACES, 512)
    assert np.abs(emb - opencv_embeddings).max() < TOLERANCE


def test_embeddings_are_unit_length_and_distinct(casia_model: torch.nn.Module, faces: np.ndarray,
                                                 opencv_embeddings: np.ndarray) -> None:
    # Both the graph (`embeddings` = x * rsqrt(sum x^2)) and facenet-pytorch L2-normalise.
    np.testing.assert_allclose(np.linalg.norm(opencv_embeddings, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        emb = casia_model(torch.from_numpy(faces)).numpy()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert (sims[~np.eye(N_FACES, dtype=bool)] < 0.99).all()  # different faces, different embeddings


def test_model_is_eval_and_on_device(casia_model: torch.nn.Module) -> None:
    assert not casia_model.training
    assert not casia_model.classify
    assert all(p.device.type == "cpu" for p in casia_model.parameters())


# --------------------------------------------------------------------------- resolve / cache


def test_casia_lands_in_facebatch_home(home: Path) -> None:
    w = W.resolve_weights()
    assert w.name == W.DEFAULT_WEIGHTS == "casia-webface"
    assert w.path == home / "weights" / "casia-webface.pt"
    assert w.sha256 == W.CASIA_WEBFACE_SHA256
    assert w.tag == f"casia-webface@{W.CASIA_WEBFACE_SHA256[:12]}"
    # No temp files left; verified.json lets later runs skip the content check (see below).
    assert sorted(p.name for p in w.path.parent.iterdir()) == ["casia-webface.pt", "verified.json"]


def test_verified_weights_resolve_without_importing_torch(home: Path) -> None:
    # scan's driver only hands the path on: torch's import and exit cost 2-3 s it does not need.
    code = ("import sys; import facebatch.cli, facebatch.scan.driver; from facebatch.models.weights import resolve_weights; "
            "print(resolve_weights().tag, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "FACEBATCH_HOME": str(home)}).stdout
    assert out == f"casia-webface@{W.CASIA_WEBFACE_SHA256[:12]} False\n"


def test_only_the_exact_verified_bytes_skip_the_check(casia_home: Path, fresh_home: Path) -> None:
    cached = fresh_home / "weights" / "casia-webface.pt"
    cached.parent.mkdir(parents=True)
    shutil.copy(casia_home / "weights" / "casia-webface.pt", cached)
    W.resolve_weights()  # verified and remembered
    state = torch.load(cached, weights_only=True)
    state["last_bn.bias"][0] += 1e-3
    torch.save(state, cached)
    assert W.resolve_weights().sha256 == W.CASIA_WEBFACE_SHA256  # checked again, rebuilt
    assert W.state_dict_checksum(torch.load(cached, weights_only=True)) == W.CASIA_WEBFACE_SHA256


@pytest.mark.parametrize("record", ["not json", "[1, 2]", '{"0": 1}'])
def test_a_damaged_verified_record_only_costs_the_full_check(home: Path, record: str) -> None:
    verified = home / "weights" / "verified.json"
    saved = verified.read_text()
    try:
        verified.write_text(record)
        assert W.resolve_weights().sha256 == W.CASIA_WEBFACE_SHA256
        assert W.CASIA_WEBFACE_SHA256 in verified.read_text()  # written again
    finally:
        verified.write_text(saved)


def test_cached_file_is_reused(home: Path) -> None:
    path = home / "weights" / "casia-webface.pt"
    before = path.stat().st_mtime_ns, path.stat().st_ino
    W.resolve_weights("casia-webface")
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before


@pytest.mark.parametrize("corruption", ["garbage_bytes", "changed_tensor"])
def test_corrupted_cache_is_rebuilt(casia_home: Path, fresh_home: Path, corruption: str) -> None:
    cached = fresh_home / "weights" / "casia-webface.pt"
    cached.parent.mkdir(parents=True)
    if corruption == "garbage_bytes":
        cached.write_bytes(b"\x00not a checkpoint")
    else:  # loads fine, but one value differs: only the checksum can tell
        state = torch.load(casia_home / "weights" / "casia-webface.pt", weights_only=True)
        state["last_bn.bias"][0] += 1e-3
        torch.save(state, cached)
    w = W.resolve_weights("casia-webface")
    assert w.path == cached and w.sha256 == W.CASIA_WEBFACE_SHA256
    assert W.state_dict_checksum(torch.load(cached, weights_only=True)) == W.CASIA_WEBFACE_SHA256


def test_load_rejects_file_changed_after_resolve(casia_home: Path, fresh_home: Path) -> None:
    cached = fresh_home / "weights" / "casia-webface.pt"
    cached.parent.mkdir(parents=True)
    shutil.copy(casia_home / "weights" / "casia-webface.pt", cached)
    w = W.resolve_weights("casia-webface")
    state = torch.load(cached, weights_only=True)
    state["conv2d_1a.bn.bias"].zero_()
    torch.save(state, cached)
    with pytest.raises(FacebatchError, match="changed since"):
        W.load_embedding_model(w)


def test_facebatch_home_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEBATCH_HOME", str(tmp_path / "fb"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.facebatch_home() == tmp_path / "fb"
    monkeypatch.delenv("FACEBATCH_HOME")
    assert W.facebatch_home() == tmp_path / "xdg" / "facebatch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert W.facebatch_home() == tmp_path / "user" / ".cache" / "facebatch"


# --------------------------------------------------------------------------- local files and errors


def test_local_state_dict(casia_home: Path, tmp_path: Path) -> None:
    local = tmp_path / "mine.pt"
    state = torch.load(casia_home / "weights" / "casia-webface.pt", weights_only=True)
    state["logits.weight"] = torch.zeros(3, 512)  # a training head is ignored, not an error
    torch.save(state, local)
    w = W.resolve_weights(str(local))
    assert (w.name, w.path, w.sha256) == ("mine.pt", local.resolve(), W.CASIA_WEBFACE_SHA256)
    assert w.tag == f"mine.pt@{W.CASIA_WEBFACE_SHA256[:12]}"
    model = W.load_embedding_model(w)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 160, 160)).shape == (2, 512)


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(FacebatchError, match="weights file not found"):
        W.resolve_weights(str(tmp_path / "nope.pt"))
    with pytest.raises(FacebatchError, match="not a file"):
        W.resolve_weights(str(tmp_path))


def test_garbage_local_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(os.urandom(256))
    with pytest.raises(FacebatchError, match="cannot load weights file") as err:
        W.resolve_weights(str(bad))
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_local_file_with_wrong_keys(tmp_path: Path) -> None:
    wrong = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    expected = r"do not fit InceptionResnetV1: missing .*; unexpected fc\.weight"
    with pytest.raises(FacebatchError, match=expected):
        W.resolve_weights(str(wrong))


def test_local_file_not_a_state_dict(tmp_path: Path) -> None:
    odd = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], odd)
    with pytest.raises(FacebatchError, match="not a state dict"):
        W.resolve_weights(str(odd))


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(FacebatchError, match=r"unknown weights 'casia'.*casia-webface.*vggface2.*\.pt"):
        W.resolve_weights("casia")


def test_vggface2_offline_is_one_clear_error(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facenet_pytorch.models.inception_resnet_v1 as irv1

    seen: dict[str, str | None] = {}

    def no_network(url: str, dst: str, *args: object, **kwargs: object) -> None:
        seen["TORCH_HOME"], seen["dst"] = os.environ.get("TORCH_HOME"), dst
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(irv1, "download_url_to_file", no_network)
    monkeypatch.delenv("TORCH_HOME", raising=False)
    with pytest.raises(FacebatchError) as err:
        W.resolve_weights("vggface2")
    message = str(err.value)
    assert "\n" not in message and "internet" in message and "casia-webface" in message
    assert seen["TORCH_HOME"] == str(fresh_home / "torch")  # facenet-pytorch's cache lives in our home
    assert "TORCH_HOME" not in os.environ  # and the process environment is restored


def test_vggface2_download_is_saved_without_head(casia_home: Path, fresh_home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import facenet_pytorch.models.inception_resnet_v1 as irv1

    released = torch.load(casia_home / "weights" / "casia-webface.pt", weights_only=True)
    released |= {"logits.weight": torch.zeros(8631, 512), "logits.bias": torch.zeros(8631)}

    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        assert url.endswith("vggface2.pt")
        torch.save(released, dst)

    monkeypatch.setattr(irv1, "download_url_to_file", fake_download)
    w = W.resolve_weights("vggface2")
    assert (w.name, w.path) == ("vggface2", fresh_home / "weights" / "vggface2.pt")
    assert not any(k.startswith("logits.") for k in torch.load(w.path, weights_only=True))
    assert w.sha256 == W.CASIA_WEBFACE_SHA256  # same tensors as the stand-in, head dropped
    assert W.resolve_weights("vggface2") == w  # second call: from the cache


def test_vggface2_cached_needs_no_network(casia_home: Path, fresh_home: Path) -> None:
    cached = fresh_home / "weights" / "vggface2.pt"
    cached.parent.mkdir(parents=True)
    shutil.copy(casia_home / "weights" / "casia-webface.pt", cached)  # any valid state dict will do
    w = W.resolve_weights("vggface2")
    assert (w.name, w.path, w.sha256) == ("vggface2", cached, W.CASIA_WEBFACE_SHA256)


# --------------------------------------------------------------------------- checksum


def test_checksum_covers_order_dtype_shape_and_values() -> None:
    a = {"x": torch.arange(6, dtype=torch.float32), "y": torch.ones(2)}
    base = W.state_dict_checksum(a)
    assert W.state_dict_checksum(dict(reversed(list(a.items())))) == base  # key order is irrelevant
    assert W.state_dict_checksum({**a, "x": a["x"].reshape(2, 3)}) != base
    assert W.state_dict_checksum({**a, "x": a["x"].double()}) != base
    assert W.state_dict_checksum({**a, "x": a["x"] + 1}) != base
    assert W.state_dict_checksum({"x": a["x"], "z": a["y"]}) != base  # keys are hashed
    assert len(base) == 64
