"""A minimal reader for frozen TensorFlow GraphDef files, without TensorFlow.

Only what weight conversion needs: node names, ops, inputs, and the value of every
`Const` node as a numpy array. It decodes the protobuf wire format directly; the
field numbers come from tensorflow/core/framework/{graph,node_def,attr_value,tensor,
tensor_shape,types}.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# TensorFlow DataType enum -> numpy dtype (the ones a frozen inference graph uses).
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
}

# Wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class GraphFormatError(ValueError):
    """The bytes are not a GraphDef this reader understands."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise GraphFormatError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for one message; LEN values stay zero-copy views."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise GraphFormatError("truncated length-delimited field")
            value = buf[pos : pos + size]
            pos += size
        elif wire == _I64:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == _I32:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise GraphFormatError(f"unsupported wire type {wire}")
        yield num, wire, value


def _packed_varints(buf: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, memoryview] = field(default_factory=dict)  # raw AttrValue bytes, decoded on demand

    def float_attr(self, name: str) -> float:
        """A float attr such as FusedBatchNorm's `epsilon` (AttrValue.f, field 4)."""
        for num, wire, v in _fields(self.attrs.get(name, memoryview(b""))):
            if num == 4 and wire == _I32:
                assert isinstance(v, memoryview)
                return struct.unpack("<f", v)[0]
        raise GraphFormatError(f"node {self.name!r} has no float attr {name!r}")

    def tensor(self) -> np.ndarray:
        """The `value` attr of a Const node as a numpy array."""
        raw = self.attrs.get("value")
        if raw is None:
            raise GraphFormatError(f"node {self.name!r} has no tensor value")
        for num, _, v in _fields(raw):
            if num == 8:  # AttrValue.tensor
                assert isinstance(v, memoryview)
                return _decode_tensor(v)
        raise GraphFormatError(f"node {self.name!r}: value attr is not a tensor")


def _decode_shape(buf: memoryview) -> list[int]:
    dims = []
    for num, _, v in _fields(buf):
        if num == 2:  # TensorShapeProto.dim
            assert isinstance(v, memoryview)
            size = 0
            for dnum, _, dv in _fields(v):
                if dnum == 1:
                    assert isinstance(dv, int)
                    size = dv - (1 << 64) if dv >= 1 << 63 else dv  # int64 may be -1 (unknown)
            dims.append(size)
    return dims


def _decode_tensor(buf: memoryview) -> np.ndarray:
    dtype_code, shape, content = 0, [], None
    floats: list[float] = []
    ints: list[int] = []
    for num, wire, v in _fields(buf):
        if num == 1:
            assert isinstance(v, int)
            dtype_code = v
        elif num == 2:
            assert isinstance(v, memoryview)
            shape = _decode_shape(v)
        elif num == 4:
            content = bytes(v)  # type: ignore[arg-type]
        elif num == 5:  # float_val, packed or not
            assert isinstance(v, memoryview)
            floats.extend(struct.unpack(f"<{len(v) // 4}f", v) if wire == _LEN else struct.unpack("<f", v))
        elif num in (7, 10, 11):  # int_val / int64_val / bool_val
            ints.extend(_packed_varints(v) if wire == _LEN else [v])  # type: ignore[list-item]
    if dtype_code not in _DTYPES:
        raise GraphFormatError(f"unsupported tensor dtype {dtype_code}")
    dtype = _DTYPES[dtype_code]
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        return np.frombuffer(content, dtype=dtype).reshape(shape).copy()
    vals: list[float] | list[int] = floats if dtype.kind == "f" else [_signed(i, dtype) for i in ints]
    arr = np.array(vals, dtype=dtype)
    if arr.size == count:
        return arr.reshape(shape)
    if arr.size == 1:  # TF stores a splat constant as a single repeated value
        return np.full(shape, arr[0], dtype=dtype)
    if arr.size == 0:
        return np.zeros(shape, dtype=dtype)
    raise GraphFormatError(f"tensor has {arr.size} values for shape {shape}")


def _signed(v: int, dtype: np.dtype) -> int:
    # Negative int32/int64 values are encoded as 64-bit two's complement varints.
    if dtype.kind == "i" and v >= 1 << 63:
        return v - (1 << 64)
    return v


def _decode_node(buf: memoryview) -> Node:
    node = Node(name="", op="")
    for num, _, v in _fields(buf):
        if not isinstance(v, memoryview):
            continue
        if num == 1:
            node.name = bytes(v).decode()
        elif num == 2:
            node.op = bytes(v).decode()
        elif num == 3:
            node.inputs.append(bytes(v).decode())
        elif num == 5:  # map<string, AttrValue> entry: key=1, value=2
            key, val = "", memoryview(b"")
            for enum, _, ev in _fields(v):
                assert isinstance(ev, memoryview)
                if enum == 1:
                    key = bytes(ev).decode()
                elif enum == 2:
                    val = ev
            node.attrs[key] = val
    return node


def read_graph(path: Path) -> dict[str, Node]:
    """All nodes of a frozen GraphDef, by name, in file order."""
    buf = memoryview(Path(path).read_bytes())
    nodes: dict[str, Node] = {}
    for num, _, v in _fields(buf):
        if num == 1:  # GraphDef.node
            assert isinstance(v, memoryview)
            node = _decode_node(v)
            nodes[node.name] = node
    if not nodes:
        raise GraphFormatError(f"{path} contains no graph nodes")
    return nodes
