"""models.mtcnn_graph: MTCNN's nets rewritten for ONNX Runtime give the plain export's outputs:
bit for bit with the PReLUs split, to float rounding with the channels padded too; on real face
crops and on noise wide enough to reach every PReLU slope."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from PIL import Image

from facebatch.models import mtcnn_graph
from facebatch.models.onnx_models import MTCNN_NETS, export_mtcnn_net
from facebatch.models.quantize import calibration_faces

SIZES = {"pnet": (97, 131), "rnet": (24, 24), "onet": (48, 48)}


def run(data: bytes, batch: np.ndarray) -> list[np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, {"input": batch})


def batches(name: str) -> list[np.ndarray]:
    size = SIZES[name]
    faces = np.stack([np.asarray(Image.fromarray(f).resize(size[::-1])) for f in calibration_faces()])
    real = (faces.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128
    return [real, np.random.default_rng(1).uniform(-3, 3, (16, 3, *size)).astype(np.float32)]


def only_split(data: bytes) -> bytes:
    model = onnx.load_from_string(data)
    mtcnn_graph._split_prelus(model.graph)
    return model.SerializeToString()


def op_types(data: bytes) -> set[str]:
    return {node.op_type for node in onnx.load_from_string(data).graph.node}


def conv_channels(data: bytes) -> list[int]:
    """Output channels of the nets' own convolutions (not the 1x1 ones: P-Net's heads, the split's)."""
    model = onnx.load_from_string(data)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return [weights[n.input[1]].shape[0] for n in model.graph.node
            if n.op_type == "Conv" and weights[n.input[1]].shape[2:] != (1, 1)]


@pytest.mark.parametrize("name", MTCNN_NETS)
def test_rewritten_nets_give_the_plain_exports_outputs(name):
    plain = export_mtcnn_net(name, rewritten=False)
    split, rewritten = only_split(plain), export_mtcnn_net(name)
    assert "PRelu" in op_types(plain) and "PRelu" not in op_types(split) | op_types(rewritten)
    assert all(c % mtcnn_graph.CHANNEL_BLOCK == 0 for c in conv_channels(rewritten)), conv_channels(rewritten)
    for batch in batches(name):
        want = run(plain, batch)
        for exact, got in zip(want, run(split, batch)):
            assert np.array_equal(exact, got)
        for close, got in zip(want, run(rewritten, batch)):
            assert got.shape == close.shape and np.abs(got - close).max() < 1e-5
