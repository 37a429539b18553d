"""MTCNN's three stages around facenet-pytorch's nets, in numpy: the pyramid, candidates, NMS and crops.

facenet-pytorch's `detect_face` resizes every candidate box in its own `interpolate` call (7,337
calls for 10 photos: half of detection time). Here every stage's crops come from one summed-area
table of the photo: torch's `interpolate(mode="area")` is adaptive average pooling, the mean of
an integer-bounded window, so each output pixel is four lookups in the table, for all boxes at
once. The sums are exact integers, so the pixels equal torch's to float32 rounding and the boxes
stay where facenet-pytorch puts them (tests/models/test_mtcnn.py: within 1 px on every photo of
sample_data and ../shared/datasets). Thresholds, scales, NMS and regressions are facenet-pytorch's,
step for step, in float32 as it computes them.

The nets are anything with `pnet`, `rnet` and `onet` methods on NCHW float32 arrays: torch
modules (`TorchMtcnnNets`) or their ONNX exports (`models.onnx_models.OnnxMtcnnNets`), so
detection needs no torch in the process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults for the three stages
MTCNN_SCALE_FACTOR = 0.709
RNET_SIZE = 24
ONET_SIZE = 48
_PNET_STRIDE = 2
_PNET_CELL = 12
# Above this many boxes NMS goes box by box instead of through the overlap matrix (16 MB a
# float32 array at 2,048, about five of them at once). The 12 MP benchmark photos needed 782 at most.
_NMS_MATRIX_LIMIT = 2048
# int32 holds the sum of up to 8.4 megapixels of 255s, and gathers faster than a wider type.
_INT32_TABLE_PIXELS = (2**31 - 1) // 255
# The nets take (x - 127.5) / 128 = x * _NET_SCALE - _NET_SHIFT.
_NET_SCALE = np.float32(0.0078125)
_NET_SHIFT = np.float32(127.5 * 0.0078125)


class MtcnnNets(Protocol):
    """The three networks on NCHW float32 input scaled as (x - 127.5) / 128."""

    def pnet(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1, 3, H, W) -> box regression (1, 4, h, w), face probability (1, 2, h, w)."""
        ...

    def rnet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, 24, 24) -> box regression (N, 4), face probability (N, 2)."""
        ...

    def onet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3, 48, 48) -> box regression (N, 4), landmarks (N, 10), face probability (N, 2)."""
        ...


def detect_faces(
    pixels: np.ndarray,
    min_size: float,
    nets: MtcnnNets,
    thresholds: tuple[float, float, float] = MTCNN_THRESHOLDS,
    factor: float = MTCNN_SCALE_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Faces in one (H, W, 3) uint8 image: boxes (N, 5) x1, y1, x2, y2, score and landmarks (N, 5, 2)."""
    height, width = pixels.shape[:2]
    table = summed_area_table(pixels)
    boxes = _stage_one(table, height, width, min_size, nets, thresholds[0], factor)
    if len(boxes):
        boxes = _stage_two(table, boxes, height, width, nets, thresholds[1])
    if len(boxes) == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    return _stage_three(table, boxes, height, width, nets, thresholds[2])


# --------------------------------------------------------------------------- the three stages


def _stage_one(
    table: np.ndarray, height: int, width: int, min_size: float, nets: MtcnnNets, threshold: float, factor: float
) -> np.ndarray:
    """P-Net over the pyramid: candidate squares (N, 5), regressed and squared."""
    per_scale = []
    for scale in pyramid_scales(height, width, min_size, factor):
        size = (int(height * scale + 1), int(width * scale + 1))
        reg, prob = nets.pnet(_scaled_area_resize(table, size, _NET_SCALE, _NET_SHIFT)[None])
        candidates = _pnet_candidates(reg[0], prob[0, 1], scale, threshold)
        per_scale.append(candidates[nms(candidates[:, :4], candidates[:, 4], 0.5)])
    boxes = np.concatenate(per_scale) if per_scale else np.zeros((0, 9), np.float32)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    size_x, size_y = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    regressed = np.stack([
        boxes[:, 0] + boxes[:, 5] * size_x,
        boxes[:, 1] + boxes[:, 6] * size_y,
        boxes[:, 2] + boxes[:, 7] * size_x,
        boxes[:, 3] + boxes[:, 8] * size_y,
        boxes[:, 4],
    ], axis=1)
    return _square(regressed)


def _stage_two(table: np.ndarray, boxes: np.ndarray, height: int, width: int, nets: MtcnnNets,
               threshold: float) -> np.ndarray:
    """R-Net on every candidate at once: the survivors (N, 5), regressed and squared."""
    boxes, crops = _crops(table, boxes, height, width, RNET_SIZE)
    if len(boxes) == 0:
        return boxes
    reg, prob = nets.rnet(crops)
    passed = prob[:, 1] > threshold
    boxes = np.concatenate([boxes[passed, :4], prob[passed, 1:2]], axis=1)
    keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
    return _square(_regress(boxes[keep], reg[passed][keep]))


def _stage_three(table: np.ndarray, boxes: np.ndarray, height: int, width: int, nets: MtcnnNets,
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """O-Net on every survivor at once: final boxes and landmarks."""
    boxes, crops = _crops(table, boxes, height, width, ONET_SIZE)
    if len(boxes) == 0:
        return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    reg, landmarks, prob = nets.onet(crops)
    passed = prob[:, 1] > threshold
    boxes = np.concatenate([boxes[passed, :4], prob[passed, 1:2]], axis=1)
    landmarks, reg = landmarks[passed], reg[passed]
    box_w = boxes[:, 2:3] - boxes[:, 0:1] + 1
    box_h = boxes[:, 3:4] - boxes[:, 1:2] + 1
    points = np.stack([box_w * landmarks[:, :5] + boxes[:, 0:1] - 1,
                       box_h * landmarks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
    boxes = _regress(boxes, reg)
    keep = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
    return boxes[keep], points[keep]


# --------------------------------------------------------------------------- pixels


def summed_area_table(pixels: np.ndarray) -> np.ndarray:
    """(3, H + 1, W + 1) integer sums of every top-left rectangle, per channel: any window's sum in
    4 lookups. Channels first, as the nets take them. OpenCV's integral image gives the same sums
    as two numpy cumsums, 2.3x sooner with the transpose (8 against 18 ms at 1280x960)."""
    import cv2

    height, width = pixels.shape[:2]
    depth = cv2.CV_32S if height * width <= _INT32_TABLE_PIXELS else cv2.CV_64F  # float64: exact to 2**53
    table = cv2.integral(np.ascontiguousarray(pixels), sdepth=depth)
    return np.ascontiguousarray(table.transpose(2, 0, 1))


def area_windows(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive average pooling's windows (torch's integer formula): [first, end) of each of `size`
    outputs over `length` inputs from `start`, for every row of `start`/`length`, shape (N, size)."""
    index = np.arange(size)
    length = length[:, None]
    first = (index * length) // size
    end = ((index + 1) * length + size - 1) // size
    return start[:, None] + first, start[:, None] + end


def resize_area(table: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole image resized to (h, w) as torch's interpolate(mode="area"): (3, h, w) float32 pixels."""
    return _scaled_area_resize(table, size, np.float32(1), np.float32(0))


def _scaled_area_resize(table: np.ndarray, size: tuple[int, int], scale: np.float32, shift: np.float32) -> np.ndarray:
    """resize_area(...) * scale - shift, in one pass over the output."""
    height, width = table.shape[1] - 1, table.shape[2] - 1
    (top,), (bottom,) = area_windows(np.zeros(1, np.int64), np.array([height]), size[0])
    (left,), (right,) = area_windows(np.zeros(1, np.int64), np.array([width]), size[1])
    rows = np.take(table, bottom, axis=1) - np.take(table, top, axis=1)  # (3, h, W + 1): columns still cumulative
    sums = np.take(rows, right, axis=2) - np.take(rows, left, axis=2)
    area = (bottom - top)[:, None] * (right - left)[None, :]
    return _mean_scaled(sums, area, scale, shift)


def _mean_scaled(sums: np.ndarray, area: np.ndarray, scale: np.float32, shift: np.float32) -> np.ndarray:
    """sums / area * scale - shift as float32, multiplying by the reciprocal (within an ulp of dividing)."""
    out = sums.astype(np.float32)
    out *= scale / area.astype(np.float32)
    out -= shift
    return out


def _crops(table: np.ndarray, boxes: np.ndarray, height: int, width: int, size: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """The boxes that have pixels inside the image, and their crops resized to size x size by area
    (NCHW, normalised), as facenet-pytorch cuts them: clipped to the image, from (x1 - 1, y1 - 1)."""
    x1, y1, x2, y2 = _clip(boxes, width, height)
    inside = (y2 > y1) & (x2 > x1)
    boxes, x1, y1, x2, y2 = boxes[inside], x1[inside], y1[inside], x2[inside], y2[inside]
    top, bottom = area_windows(y1, y2 - y1, size)
    left, right = area_windows(x1, x2 - x1, size)
    stride = table.shape[2]
    flat = table.reshape(table.shape[0], -1)
    t, b = (top * stride)[:, :, None], (bottom * stride)[:, :, None]
    l, r = left[:, None, :], right[:, None, :]
    # np.take gathers 1.5x faster than fancy indexing here (0.73 -> 0.48 s over 56 photos' crops).
    sums = (np.take(flat, b + r, axis=1) - np.take(flat, t + r, axis=1)
            - np.take(flat, b + l, axis=1) + np.take(flat, t + l, axis=1))  # (3, N, size, size)
    area = (bottom - top)[:, :, None] * (right - left)[:, None, :]
    crops = _mean_scaled(sums, area, _NET_SCALE, _NET_SHIFT)
    return boxes, np.ascontiguousarray(crops.transpose(1, 0, 2, 3))


def _clip(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    """facenet-pytorch's `pad`: truncated box corners clipped to the image, as slice bounds."""
    corners = np.trunc(boxes[:, :4]).astype(np.int64)
    x1 = np.maximum(corners[:, 0], 1) - 1
    y1 = np.maximum(corners[:, 1], 1) - 1
    x2 = np.minimum(corners[:, 2], width)
    y2 = np.minimum(corners[:, 3], height)
    return x1, y1, x2, y2


# --------------------------------------------------------------------------- boxes


def pyramid_scales(height: int, width: int, min_size: float, factor: float = MTCNN_SCALE_FACTOR) -> list[float]:
    """P-Net's scales: the smallest face maps to its 12-px window, then every `factor` down to 12 px."""
    scale = 12.0 / min_size
    shortest = min(height, width) * scale
    scales = []
    while shortest >= 12:
        scales.append(scale)
        scale *= factor
        shortest *= factor
    return scales


def _pnet_candidates(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """facenet-pytorch's generateBoundingBox: (N, 9) x1, y1, x2, y2, score, 4 regressions."""
    ys, xs = np.nonzero(prob >= threshold)
    cells = np.stack([xs, ys], axis=1).astype(np.float32)
    scale = np.float32(scale)
    q1 = np.floor((_PNET_STRIDE * cells + 1) / scale)
    q2 = np.floor((_PNET_STRIDE * cells + _PNET_CELL) / scale)
    return np.concatenate([q1, q2, prob[ys, xs][:, None], reg[:, ys, xs].T], axis=1).astype(np.float32)


def _square(boxes: np.ndarray) -> np.ndarray:
    """facenet-pytorch's rerec: each box grown to a square around its centre."""
    boxes = boxes.copy()
    height, width = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = np.maximum(width, height)
    boxes[:, 0] = boxes[:, 0] + width * np.float32(0.5) - side * np.float32(0.5)
    boxes[:, 1] = boxes[:, 1] + height * np.float32(0.5) - side * np.float32(0.5)
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """facenet-pytorch's bbreg: corners moved by the regression times the (inclusive) box size."""
    boxes = boxes.copy()
    width = boxes[:, 2] - boxes[:, 0] + 1
    height = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = boxes[:, :4] + reg[:, :4] * np.stack([width, height, width, height], axis=1)
    return boxes


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision's nms: indices kept, best first; a box goes when its IoU with a kept one > threshold."""
    return _greedy_nms(boxes, np.argsort(-scores, kind="stable"), threshold, minimum=False, inclusive=False)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's final nms_numpy(..., 'Min'): overlap over the smaller box, +1 pixel sizes."""
    return _greedy_nms(boxes, np.argsort(scores)[::-1], threshold, minimum=True, inclusive=True)


def _greedy_nms(boxes: np.ndarray, order: np.ndarray, threshold: float, minimum: bool, inclusive: bool) -> np.ndarray:
    """Greedy NMS over `order`. Up to _NMS_MATRIX_LIMIT boxes every overlap is computed at once (the
    same float32 arithmetic, element for element) and the greedy pass only reads rows of it: 5x
    faster than shrinking the candidate list box by box, which stays for larger sets (memory)."""
    if len(order) > _NMS_MATRIX_LIMIT:
        return _greedy_nms_rows(boxes, order, threshold, minimum, inclusive)
    apart = _overlap(boxes, boxes, minimum, inclusive) <= threshold  # NaN (empty boxes) counts as overlapping
    alive = np.ones(len(boxes), bool)
    keep = []
    for best in order.tolist():
        if alive[best]:
            keep.append(best)
            alive &= apart[best]
    return np.asarray(keep, np.int64)


def _greedy_nms_rows(boxes: np.ndarray, order: np.ndarray, threshold: float, minimum: bool,
                     inclusive: bool) -> np.ndarray:
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[_overlap(boxes[best:best + 1], boxes[rest], minimum, inclusive)[0] <= threshold]
    return np.asarray(keep, np.int64)


def _overlap(a: np.ndarray, b: np.ndarray, minimum: bool, inclusive: bool) -> np.ndarray:
    """(len(a), len(b)) overlap of boxes: IoU, or over the smaller box (`minimum`); `inclusive`
    counts corners as pixels (+1), as facenet-pytorch's numpy NMS does."""
    one = np.float32(1 if inclusive else 0)
    ax1, ay1, ax2, ay2 = (a[:, i, None] for i in range(4))
    bx1, by1, bx2, by2 = (b[None, :, i] for i in range(4))
    area_a = (ax2 - ax1 + one) * (ay2 - ay1 + one)
    area_b = (bx2 - bx1 + one) * (by2 - by1 + one)
    inter_w = np.maximum(np.float32(0), np.minimum(ax2, bx2) - np.maximum(ax1, bx1) + one)
    inter_h = np.maximum(np.float32(0), np.minimum(ay2, by2) - np.maximum(ay1, by1) + one)
    inter = inter_w * inter_h
    with np.errstate(invalid="ignore", divide="ignore"):  # empty boxes: NaN, which NMS treats as overlapping
        if minimum:
            return inter / np.minimum(area_a, area_b)
        return inter / (area_a + area_b - inter)


# --------------------------------------------------------------------------- torch nets


class TorchMtcnnNets:
    """facenet-pytorch's P-, R- and O-Net in torch, channels-last (NCHW max-pool on the CPU is 6-14x
    slower than NHWC), for --runtime torch and --device cuda."""

    def __init__(self, device: str = "cpu") -> None:
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.device = device
        self._nets = tuple(net().eval().to(device).to(memory_format=torch.channels_last) for net in (PNet, RNet, ONet))

    def _run(self, net: torch.nn.Module, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, memory_format=torch.channels_last)
            return tuple(out.float().cpu().numpy() for out in net(tensor))

    def pnet(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, prob = self._run(self._nets[0], image)
        return reg, prob

    def rnet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, prob = self._run(self._nets[1], crops)
        return reg, prob

    def onet(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reg, landmarks, prob = self._run(self._nets[2], crops)
        return reg, landmarks, prob
