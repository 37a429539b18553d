"""The models in ONNX Runtime: exported once from the torch modules, cached, checksummed, run without torch.

Files (in `facebatch_home()/onnx/`, beside the converted weights):

    facenet-<weights checksum>-fp32.onnx   InceptionResnetV1 with those weights, as load_embedding_model builds it
    facenet-<weights checksum>-int8-<recipe>.onnx   the same, statically quantised (models.quantize)
    mtcnn-<nets checksum>-pnet-<recipe>.onnx ...   facenet-pytorch's P-, R- and O-Net (the weights it
                                           ships), rewritten for ONNX Runtime's kernels (models.mtcnn_graph)
    manifest.json                          file name -> sha256 of its bytes and what it was made from

They are made the first time a command needs them (a scan makes them in its own process, before
its workers start), which needs torch and takes about a minute; from then on `scan`'s workers,
`verify` and `identify` read them without importing torch. Everything comes from installed
packages: a fresh install works offline. Each file is checked against the sha256 the manifest
recorded for it every time it is opened (from the same bytes that are then loaded); a missing,
changed or unreadable file is made again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facebatch.errors import FacebatchError
from facebatch.files import atomic_write_bytes, read_json_map, record_in_json_map
from facebatch.models.mtcnn_graph import RECIPE as MTCNN_RECIPE
from facebatch.models.mtcnn_graph import rewrite as rewrite_mtcnn_graph
from facebatch.models.weights import Weights, facebatch_home

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

OPSET = 17
MTCNN_NETS = ("pnet", "rnet", "onet")
# Exported nets must give torch's outputs to this (max abs difference, checked on real faces at export).
EXPORT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class OnnxModel:
    path: Path
    sha256: str  # of the file's bytes, recorded when it was made

    def session(self, threads: int) -> onnxruntime.InferenceSession:
        """An ONNX Runtime session on `threads` cores, from bytes that match the recorded sha256."""
        import onnxruntime

        data = _read(self.path)
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise FacebatchError(f"model file {self.path} changed since it was checked; run again to make it anew")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class OnnxModels:
    """The ONNX files one pipeline needs; picklable, it travels to the workers (never a session)."""

    facenet: OnnxModel | None  # None when the model does not run FaceNet
    pnet: OnnxModel
    rnet: OnnxModel
    onet: OnnxModel


def onnx_dir() -> Path:
    return facebatch_home() / "onnx"


def prepare_onnx_models(weights: Weights | None, precision: str) -> OnnxModels:
    """The FaceNet file of that precision (none without `weights`: a model that does not run FaceNet)
    and MTCNN's three, made (with torch) if missing or damaged."""
    mtcnn_key = mtcnn_checksum()[:12]
    nets = {name: _cached_or_made(f"mtcnn-{mtcnn_key}-{name}-{MTCNN_RECIPE}.onnx", lambda n=name: export_mtcnn_net(n))
            for name in MTCNN_NETS}
    facenet = _facenet(weights, precision) if weights is not None else None
    return OnnxModels(facenet, nets["pnet"], nets["rnet"], nets["onet"])


def _facenet(weights: Weights, precision: str) -> OnnxModel:
    def fp32() -> OnnxModel:
        return _cached_or_made(f"facenet-{weights.sha256[:12]}-fp32.onnx", lambda: export_facenet(weights))

    if precision == "fp32":
        return fp32()
    if precision == "int8":
        from facebatch.models.quantize import RECIPE, quantize_facenet

        return _cached_or_made(f"facenet-{weights.sha256[:12]}-int8-{RECIPE}.onnx", lambda: quantize_facenet(fp32()))
    raise FacebatchError(f"no {precision} FaceNet: precisions are fp32 and int8")


# --------------------------------------------------------------------------- cache


def _manifest_path() -> Path:
    return onnx_dir() / "manifest.json"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FacebatchError(f"cannot read model file {path}: {exc.strerror or exc}") from exc


def _cached_or_made(name: str, make: Callable[[], bytes]) -> OnnxModel:
    """The cached file if its bytes still match the manifest, else the bytes `make()` returns."""
    path = onnx_dir() / name
    recorded = read_json_map(_manifest_path()).get(name, {}).get("sha256")
    if recorded and path.is_file():
        with contextlib.suppress(FacebatchError):
            if hashlib.sha256(_read(path)).hexdigest() == recorded:
                return OnnxModel(path, recorded)
    logger.info("preparing %s, first run only (it can take a minute)", path.name)
    data = make()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    record_in_json_map(_manifest_path(), name, {"sha256": digest})
    return OnnxModel(path, digest)


# --------------------------------------------------------------------------- export (needs torch)


def export_facenet(weights: Weights) -> bytes:
    """InceptionResnetV1 as `load_embedding_model` builds it, batch size free; checked against torch."""
    import torch

    from facebatch.models.facenet import to_model_input
    from facebatch.models.quantize import calibration_faces
    from facebatch.models.weights import load_embedding_model

    model = load_embedding_model(weights)
    data = _export(model, torch.zeros(1, 3, 160, 160), ["embedding"], {"input": {0: "n"}, "embedding": {0: "n"}})
    faces = to_model_input(calibration_faces()[:8])
    with torch.inference_mode():
        expected = model(torch.from_numpy(faces)).numpy()
    _check_export(data, {"input": faces}, [expected], f"FaceNet for {weights.tag}")
    return data


def export_mtcnn_net(name: str, rewritten: bool = True) -> bytes:
    """One of facenet-pytorch's MTCNN nets, rewritten for ONNX Runtime (models.mtcnn_graph) unless
    told not to; P-Net takes any image size, R- and O-Net any batch. Checked against torch."""
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    net, size, outputs = {
        "pnet": (PNet, 48, ["reg", "prob"]),
        "rnet": (RNet, 24, ["reg", "prob"]),
        "onet": (ONet, 48, ["reg", "landmarks", "prob"]),
    }[name]
    model = net().eval()
    axes = {"input": {0: "n", 2: "h", 3: "w"} if name == "pnet" else {0: "n"}}
    axes.update({output: {0: "n"} for output in outputs})
    data = _export(model, torch.zeros(1, 3, size, size), outputs, axes)
    if rewritten:
        data = rewrite_mtcnn_graph(data)
    sample = np.random.default_rng(0).uniform(-1, 1, (4, 3, 61, 83) if name == "pnet" else (4, 3, size, size))
    sample = sample.astype(np.float32)
    with torch.inference_mode():
        expected = [out.numpy() for out in model(torch.from_numpy(sample))]
    _check_export(data, {"input": sample}, expected, f"MTCNN {name}")
    return data


def _export(model: Any, example: Any, outputs: list[str], axes: dict[str, dict[int, str]]) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The TorchScript exporter: the dynamo one needs onnxscript and gives the same graph here.
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["input"], output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET)
    return buffer.getvalue()


def _check_export(data: bytes, feeds: dict[str, np.ndarray], expected: list[np.ndarray], what: str) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    for got, want in zip(session.run(None, feeds), expected):
        if (error := float(np.abs(got - want).max())) > EXPORT_TOLERANCE:
            raise FacebatchError(f"the ONNX export of {what} differs from torch by {error:.2g}; "
                                 f"use --runtime torch and report this (torch and onnxruntime versions)")


def mtcnn_checksum() -> str:
    """sha256 over the three weight files facenet-pytorch ships, found without importing it (or torch)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    folders = list(spec.submodule_search_locations or []) if spec else []
    digest = hashlib.sha256()
    for name in MTCNN_NETS:
        files = [Path(folder) / "data" / f"{name}.pt" for folder in folders]
        found = next((f for f in files if f.is_file()), None)
        if found is None:
            raise FacebatchError(f"facenet-pytorch's {name}.pt is missing: reinstall facenet-pytorch")
        digest.update(found.read_bytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- running


class OnnxMtcnnNets:
    """MTCNN's nets in ONNX Runtime (models.mtcnn.MtcnnNets)."""

    def __init__(self, models: OnnxModels, threads: int) -> None:
        self._pnet = models.pnet.session(threads)
        self._rnet = models.rnet.session(threads)
        self._onet = models.onet.session(threads)

    def pnet(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, prob = self._pnet.run(None, {"input": image})
        return reg, prob

    def rnet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, prob = self._rnet.run(None, {"input": crops})
        return reg, prob

    def onet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reg, landmarks, prob = self._onet.run(None, {"input": crops})
        return reg, landmarks, prob
