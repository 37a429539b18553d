"""SFace in int8: its graph reshaped so that every step has an int8 kernel, then statically quantised.

ONNX Runtime's quantiser, given SFace as converted (models.sface), leaves its 29 PReLUs in fp32
between the int8 convolutions, each with a dequantise and a quantise around it, and its PReLU
kernel on the int8 path's channels-last tensors is slow: 22 ms a face, 75% of it in PReLU, against
14 ms in fp32. The net is a chain (convolution, BatchNorm, PReLU, convolution...: no branches), so
it is rewritten first:

1. Each BatchNorm is folded into the convolution before it.
2. Channels are equalised (Nagel et al., "Data-free quantization", 2019): PReLU(k z) = k PReLU(z)
   for k > 0, so each channel between two convolutions is scaled up by k (the first
   convolution's filter and bias times k, the second's input weights over k) and the graph
   computes the same function. k = (largest channel's range / this channel's range) ** 0.5, the
   ranges measured on the calibration faces: one int8 scale per tensor then fits its channels
   better (mean cosine to fp32 on lfw-dev 0.9879 -> 0.9905; the full power 1.0 starves the second
   convolution's weights: 0.9862).
3. PReLU(z) = z + relu(-(1 - a) z) (to float rounding) for a per-channel slope a <= 1: the second term is a
   depthwise 1x1 convolution with its ReLU (one int8 kernel), and the sum an int8 Add. The two
   first PReLUs have a few slopes above 1; there it is z + (1 - a) relu(-z), two convolutions.

Then ONNX Runtime's static quantiser (QDQ, per-channel int8 weights in 7 bits as models.quantize
explains, uint8 activations with ranges at the 99.99th percentile of the calibration faces'
values: MinMax gave mean cosine 0.9825) on the shipped calibration faces of sample_data/ aligned
for SFace, and their mirror images.

Measured (one thread, AMD EPYC with AVX-512 VNNI, batches of 16; lfw-dev's 3,729 faces against
fp32): 6.0 ms a face against 14.3 ms in fp32 (int8 FaceNet: 7.7 ms); cosine to fp32 mean 0.990,
min 0.886; 10-fold pair accuracy 99.67% against 99.77% (benchmarks/sface_int8.py).
BENCHMARKS.md section 18 has the people figures.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from facebatch.errors import FacebatchError
from facebatch.models.quantize import _unit, face_by_face
from facebatch.models.sface import _INPUT, _fp32, _session, to_model_input

# Part of the int8 file's name: another recipe makes a new file.
RECIPE = "eq05-prelu-residual-qdq-p9999-r7"
EQUALISING_POWER = 0.5
PERCENTILE = 99.99
# The int8 model must keep the calibration faces this close to fp32 (mean cosine), or it is
# refused (they measure 0.99 on lfw-dev's faces, which the calibration never saw).
MIN_MEAN_COSINE = 0.98


def quantize_sface(plain: bytes, faces: np.ndarray) -> bytes:
    """The int8 model's bytes from the plain fp32 graph (models.sface.plain_sface), calibrated on
    `faces` ((N, 112, 112, 3) aligned RGB crops) and their mirrors, checked against fp32."""
    import onnx

    inputs = to_model_input(np.concatenate([faces, faces[:, :, ::-1]]))
    model = onnx.load_from_string(plain)
    _fold_batchnorms(model.graph)
    _equalise(model, inputs)
    _prelus_as_residuals(model.graph)
    data = _quantize(model, inputs)
    _check(plain, data, inputs)
    return data


# --------------------------------------------------------------------------- 1. BatchNorm


def _fold_batchnorms(graph: Any) -> None:
    """Each BatchNormalization that alone reads a convolution's output, folded into its filter and bias."""
    from onnx import numpy_helper

    tensors = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    nodes = []
    for node in graph.node:
        conv = producer.get(node.input[0]) if node.op_type == "BatchNormalization" else None
        if conv is None or conv.op_type != "Conv" or len(readers[conv.output[0]]) != 1:
            nodes.append(node)
            continue
        gamma, beta, mean, variance = (tensors[name] for name in node.input[1:5])
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        factor = gamma / np.sqrt(variance + epsilon)
        weight = tensors[conv.input[1]]
        bias = tensors[conv.input[2]] if len(conv.input) > 2 else np.zeros(weight.shape[0], np.float32)
        tensors[conv.input[1]] = weight * factor[:, None, None, None]
        tensors[bias_name := f"{node.output[0]}_folded_bias"] = (bias - mean) * factor + beta
        del conv.input[2:]
        conv.input.append(bias_name)
        conv.output[0] = node.output[0]
    _replace(graph, nodes, tensors)


# --------------------------------------------------------------------------- 2. equalising


def _equalise(model: Any, inputs: np.ndarray) -> None:
    """Scale each channel between convolution -> PReLU -> convolution toward the widest's range."""
    from onnx import numpy_helper

    graph = model.graph
    tensors = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    chains = [(producer[node.input[0]], node, readers[node.output[0]][0]) for node in graph.node
              if node.op_type == "PRelu" and producer[node.input[0]].op_type == "Conv"
              and len(readers[node.output[0]]) == 1 and readers[node.output[0]][0].op_type == "Conv"]
    ranges = _channel_ranges(model, [prelu.output[0] for _, prelu, _ in chains], inputs)
    for (first, _, second), extent in zip(chains, ranges):
        extent = np.maximum(extent, 1e-3 * extent.max())  # a dead channel is not blown up
        k = ((extent.max() / extent) ** EQUALISING_POWER).astype(np.float32)
        tensors[first.input[1]] *= k[:, None, None, None]
        if len(first.input) > 2:
            tensors[first.input[2]] *= k
        depthwise = any(a.name == "group" and a.i > 1 for a in second.attribute)
        tensors[second.input[1]] /= k[:, None, None, None] if depthwise else k[None, :, None, None]
    _replace(graph, list(graph.node), tensors)


def _channel_ranges(model: Any, names: list[str], inputs: np.ndarray) -> list[np.ndarray]:
    """The largest |value| of each channel of each named tensor over `inputs`."""
    import onnx
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names)
    session = _session(probe.SerializeToString())
    ranges = [np.zeros(0, np.float32)] * len(names)
    for start in range(0, len(inputs), 16):
        outputs = session.run(names, {_INPUT: inputs[start : start + 16]})
        ranges = [np.maximum(r, np.abs(o).max(axis=(0, 2, 3))) if len(r) else np.abs(o).max(axis=(0, 2, 3))
                  for r, o in zip(ranges, outputs)]
    return ranges


# --------------------------------------------------------------------------- 3. PReLU


def _prelus_as_residuals(graph: Any) -> None:
    from onnx import helper, numpy_helper

    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = []

    def depthwise(name: str, source: str, weights: np.ndarray) -> Any:
        channels = len(weights)
        tensors[f"{name}_w"] = weights.reshape(channels, 1, 1, 1).astype(np.float32)
        tensors[f"{name}_b"] = np.zeros(channels, np.float32)
        return helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [name], name=name, group=channels,
                                kernel_shape=[1, 1])

    for node in graph.node:
        slope = tensors.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None or slope.ndim != 3:
            nodes.append(node)
            continue
        (z, _), y = node.input, node.output[0]
        rest = 1 - slope.reshape(-1)
        if (rest >= 0).all():  # z + relu(-(1 - a) z)
            nodes += [depthwise(f"{y}_n", z, -rest), helper.make_node("Relu", [f"{y}_n"], [f"{y}_r"], name=f"{y}_r")]
            negative = f"{y}_r"
        else:  # z + (1 - a) relu(-z)
            nodes += [depthwise(f"{y}_n", z, -np.ones_like(rest)), helper.make_node("Relu", [f"{y}_n"], [f"{y}_r"], name=f"{y}_r"),
                      depthwise(f"{y}_s", f"{y}_r", rest)]
            negative = f"{y}_s"
        nodes.append(helper.make_node("Add", [z, negative], [y], name=f"{y}_add"))
    _replace(graph, nodes, tensors)


# --------------------------------------------------------------------------- quantising


def _quantize(model: Any, inputs: np.ndarray) -> bytes:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # The calibrator prints its progress: a scan's output is not the place for it.
    with tempfile.TemporaryDirectory(prefix="facebatch-quantize-") as scratch, contextlib.redirect_stdout(io.StringIO()):
        rewritten, prepared, quantized = (Path(scratch) / f"{n}.onnx" for n in ("rewritten", "prepared", "int8"))
        onnx.save(model, str(rewritten))
        quant_pre_process(str(rewritten), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), face_by_face(inputs, _INPUT), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile, op_types_to_quantize=["Conv", "Gemm", "Add", "Relu"],
                        extra_options={"CalibPercentile": PERCENTILE})
        return quantized.read_bytes()


def _check(plain: bytes, data: bytes, inputs: np.ndarray) -> None:
    reference, got = (_session(graph).run(None, {_INPUT: inputs})[0] for graph in (plain, data))
    cosine = float(np.mean(np.sum(_unit(reference) * _unit(got), axis=1)))
    if not cosine >= MIN_MEAN_COSINE:
        raise FacebatchError(f"the int8 SFace strays from fp32 (mean cosine {cosine:.3f} < {MIN_MEAN_COSINE}) on this "
                             "machine's ONNX Runtime: use --precision fp32")


# --------------------------------------------------------------------------- graph plumbing


def _readers(graph: Any) -> dict[str, list[Any]]:
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for output in graph.output:
        readers.setdefault(output.name, []).append(output)  # a graph output is a reader too
    return readers


def _replace(graph: Any, nodes: list[Any], tensors: dict[str, np.ndarray]) -> None:
    """The graph's nodes, and as initialisers the tensors they read (float32)."""
    from onnx import numpy_helper

    used = {name for node in nodes for name in node.input}
    initializers = [numpy_helper.from_array(_fp32(value), name) for name, value in tensors.items() if name in used]
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("initializer")
    graph.initializer.extend(initializers)
