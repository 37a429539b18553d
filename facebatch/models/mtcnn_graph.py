"""MTCNN's exported graphs rewritten for ONNX Runtime's CPU kernels, the same nets in a faster shape.

ONNX Runtime runs convolutions in a blocked layout (NCHWc: channels in blocks of 8, or 16 with
AVX-512) and reorders a tensor to the plain layout for every step that has no blocked kernel.
facenet-pytorch's nets had two such steps, which its profile on one thread showed:

1. PReLU (a slope per channel) after every convolution: 35-41% of the nets' time in PReLU, 9-13%
   in reorders. Rewritten as relu(z) + (-a) * relu(-z), with -z and (-a) * . as depthwise 1x1
   convolutions (zero bias), every step has a blocked kernel and the sum fuses into the second
   convolution. Exact: one of the two terms is always exactly zero (z > 0: z + (-a) * 0 = z;
   z <= 0: 0 + (-a)(-z) = a z, the product PReLU rounds). A PReLU after a dense layer (2-D)
   becomes relu(z) + a * (z - relu(z)), exact the same way.
2. Convolutions whose channels are not a whole number of blocks (P-Net's first, 10 channels;
   R-Net's first, 28) stay in the plain layout with everything after them up to the next
   convolution. They get zero filters up to a multiple of 16 and the next convolution zero
   weights for them: the same outputs to float rounding (the sums run in another order: P-Net's
   outputs move by at most ~2e-6, R-Net's not at all).

One thread, against the plain export: P-Net 79 -> 64 ms on a 1280x960 photo's first pyramid
level, R-Net 109 -> 63 ms for 700 crops, O-Net 50 -> 29 ms for 60; detection 23.7 -> 19.0 ms per
LFW photo and 277 -> 221 ms per 12 MP photo, boxes within 1e-4 px (tests/models/test_mtcnn.py
and test_mtcnn_graph.py). Running the first convolution twice (once negated) instead of negating
its output measured the same and was left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RECIPE = "pad16-prelu-split"  # part of the cached files' names: another recipe makes new files
CHANNEL_BLOCK = 16  # a multiple of ONNX Runtime's NCHWc block on AVX2 (8) and AVX-512 (16)
_PER_CHANNEL = ("PRelu", "MaxPool")  # steps between two convolutions that keep channels apart


def rewrite(data: bytes) -> bytes:
    """The ONNX model in `data`, its channels padded to blocks and its PReLUs split, as above."""
    import onnx

    model = onnx.load_from_string(data)
    _pad_channels(model.graph)
    _split_prelus(model.graph)
    return model.SerializeToString()


# --------------------------------------------------------------------------- 1. PReLU


def _split_prelus(graph: Any) -> None:
    from onnx import numpy_helper

    slopes = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    nodes: list[Any] = []
    for node in graph.node:
        slope = slopes.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None:
            nodes.append(node)
        elif slope.ndim == 3 and slope.shape[1:] == (1, 1):  # after a convolution: (C, 1, 1)
            nodes += _split_blocked(graph, node, slope.reshape(-1).astype(np.float32))
        elif slope.ndim == 1:  # after a dense layer: (C,)
            nodes += _split_plain(node)
        else:
            nodes.append(node)
    used = {name for node in nodes for name in node.input}
    initializers = [tensor for tensor in graph.initializer if tensor.name in used]
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("initializer")
    graph.initializer.extend(initializers)


def _split_blocked(graph: Any, node: Any, slope: np.ndarray) -> list[Any]:
    from onnx import helper, numpy_helper

    z, y = node.input[0], node.output[0]
    channels = len(slope)
    names = {part: f"{y}_{part}" for part in ("negate", "scale", "zero", "positive", "negated", "negative", "scaled")}
    graph.initializer.extend([
        numpy_helper.from_array(np.full((channels, 1, 1, 1), -1.0, np.float32), names["negate"]),
        numpy_helper.from_array((-slope).reshape(channels, 1, 1, 1), names["scale"]),
        numpy_helper.from_array(np.zeros(channels, np.float32), names["zero"]),
    ])
    depthwise = {"group": channels, "kernel_shape": [1, 1]}
    return [
        helper.make_node("Relu", [z], [names["positive"]]),
        helper.make_node("Conv", [z, names["negate"], names["zero"]], [names["negated"]], **depthwise),
        helper.make_node("Relu", [names["negated"]], [names["negative"]]),
        helper.make_node("Conv", [names["negative"], names["scale"], names["zero"]], [names["scaled"]], **depthwise),
        helper.make_node("Add", [names["positive"], names["scaled"]], [y]),
    ]


def _split_plain(node: Any) -> list[Any]:
    from onnx import helper

    (z, slope), y = node.input, node.output[0]
    positive, negative, scaled = f"{y}_positive", f"{y}_negative", f"{y}_scaled"
    return [
        helper.make_node("Relu", [z], [positive]),
        helper.make_node("Sub", [z, positive], [negative]),
        helper.make_node("Mul", [negative, slope], [scaled]),
        helper.make_node("Add", [positive, scaled], [y]),
    ]


# --------------------------------------------------------------------------- 2. channel blocks


def _pad_channels(graph: Any) -> None:
    """Zero filters up to a multiple of CHANNEL_BLOCK for each convolution whose output reaches
    exactly one next convolution through per-channel steps only (zero in, zero out: the padded
    channels stay zero, and the next convolution gives them zero weights)."""
    from onnx import numpy_helper

    tensors = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list[Any]] = {output.name: [output] for output in graph.output}  # not a step: no path
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(tensors[name])

    def replace(name: str, value: np.ndarray) -> None:
        tensors[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in tensors:
            continue
        weight = array(node.input[1])
        extra = -weight.shape[0] % CHANNEL_BLOCK
        path = _path_to_next_conv(node, consumers)
        if not extra or path is None or not all(n.input[1] in tensors for n in path if n.op_type != "MaxPool"):
            continue
        replace(node.input[1], _grow(weight, extra, axis=0))
        if len(node.input) > 2:
            replace(node.input[2], _grow(array(node.input[2]), extra, axis=0))
        for step in path:
            if step.op_type == "PRelu":
                replace(step.input[1], _grow(array(step.input[1]), extra, axis=0))
            elif step.op_type == "Conv":
                replace(step.input[1], _grow(array(step.input[1]), extra, axis=1))


def _path_to_next_conv(conv: Any, consumers: dict[str, list[Any]]) -> list[Any] | None:
    """The per-channel steps after `conv` and the one convolution they lead to, or None when the
    output goes anywhere else (an output of the graph, a dense layer, two consumers)."""
    path: list[Any] = []
    output = conv.output[0]
    while len(users := consumers.get(output, [])) == 1:
        step = users[0]
        path.append(step)
        if getattr(step, "op_type", None) == "Conv":
            return path
        if getattr(step, "op_type", None) not in _PER_CHANNEL:
            return None
        output = step.output[0]
    return None


def _grow(values: np.ndarray, extra: int, axis: int) -> np.ndarray:
    shape = list(values.shape)
    shape[axis] = extra
    return np.concatenate([values, np.zeros(shape, values.dtype)], axis=axis)
