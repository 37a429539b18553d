"""facebatch.models.mtcnn: the batched glue, with torch or ONNX nets, finds the faces facenet-pytorch's
`detect_face` finds, boxes within 1 px, on sample_data and on the shared datasets' photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SAMPLE_DATA, dataset, hard_manifest
from facebatch.config import DEFAULT_DETECT_MAX_SIDE
from facebatch.errors import PhotoError
from facebatch.imageload import decode_photo
from facebatch.models import mtcnn as M
from facebatch.models.detection import MTCNN_MIN_SIZE, detection_copy
from facebatch.models.onnx_models import OnnxMtcnnNets, prepare_onnx_models
from facebatch.models.weights import resolve_weights

BOX_TOLERANCE = 1.0  # pixels at the detection scale


@pytest.fixture(scope="module")
def torch_nets() -> M.TorchMtcnnNets:
    return M.TorchMtcnnNets()


@pytest.fixture(scope="module")
def onnx_nets() -> OnnxMtcnnNets:
    return OnnxMtcnnNets(prepare_onnx_models(resolve_weights(), "int8"), threads=2)


def detection_pixels(path: Path) -> np.ndarray | None:
    """The detection copy the scan makes of a photo; None for a file that is no usable photo."""
    try:
        photo = decode_photo(path.read_bytes(), min_long_side=DEFAULT_DETECT_MAX_SIDE)
    except PhotoError:
        return None
    pixels = np.asarray(detection_copy(photo, DEFAULT_DETECT_MAX_SIDE)[0])
    return pixels if min(pixels.shape[:2]) >= MTCNN_MIN_SIZE else None


def facenet_pytorch_boxes(pixels: np.ndarray, nets: M.TorchMtcnnNets) -> np.ndarray:
    """What facenet-pytorch's own detect_face (a resize call per box) finds, best first."""
    from facenet_pytorch.models.utils.detect_face import detect_face

    with torch.inference_mode():
        boxes, _ = detect_face(pixels[None], MTCNN_MIN_SIZE, *nets._nets, list(M.MTCNN_THRESHOLDS),
                               M.MTCNN_SCALE_FACTOR, "cpu")
    boxes = np.asarray(boxes[0], float).reshape(-1, 5)
    return boxes[np.argsort(-boxes[:, 4], kind="stable")]


def assert_same_faces(photos: list[Path], torch_nets: M.TorchMtcnnNets, *nets: M.MtcnnNets) -> int:
    """Each of `nets` in the batched glue finds facenet-pytorch's faces; returns photos compared."""
    compared = 0
    for path in photos:
        pixels = detection_pixels(path)
        if pixels is None:
            continue
        expected = facenet_pytorch_boxes(pixels, torch_nets)
        for net in nets:
            boxes, points = M.detect_faces(pixels, MTCNN_MIN_SIZE, net)
            boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
            assert len(boxes) == len(expected), (path, type(net).__name__)
            assert points.shape == (len(boxes), 5, 2)
            if len(boxes):
                assert np.abs(boxes[:, :4] - expected[:, :4]).max() <= BOX_TOLERANCE, (path, type(net).__name__)
                assert np.abs(boxes[:, 4] - expected[:, 4]).max() < 1e-3, (path, type(net).__name__)
        compared += 1
    return compared


def sample_photos() -> list[Path]:
    return sorted(p for p in SAMPLE_DATA.rglob("*") if p.suffix.lower() in (".jpg", ".png"))


def shared_photos() -> list[Path]:
    """faces-dev, every hard/ image and 21 lfw-dev photos (skips when ../shared is absent)."""
    faces_dev = sorted(p for p in dataset("faces-dev").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    hard = dataset("hard")
    lfw = sorted((dataset("lfw-dev") / "images").rglob("*.jpg"))[::160]
    return faces_dev + [hard / row["path"] for row in hard_manifest(hard)] + lfw


def test_batched_glue_and_onnx_nets_find_facenet_pytorchs_faces_on_sample_data(torch_nets, onnx_nets):
    assert assert_same_faces(sample_photos(), torch_nets, torch_nets, onnx_nets) == 11


def test_batched_glue_and_onnx_nets_on_the_shared_datasets(torch_nets, onnx_nets):
    assert assert_same_faces(shared_photos(), torch_nets, torch_nets, onnx_nets) > 60


@pytest.mark.parametrize("wide", [False, True], ids=["int32", "float64"])
def test_summed_area_table_holds_every_rectangles_exact_sum(monkeypatch, wide):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (61, 83, 3), np.uint8)
    if wide:  # the table a photo over 8.4 megapixels gets, whose sums outgrow int32
        monkeypatch.setattr(M, "_INT32_TABLE_PIXELS", 100)
    table = M.summed_area_table(pixels)
    assert table.shape == (3, 62, 84) and table.dtype == (np.float64 if wide else np.int32)
    expected = np.zeros((3, 62, 84), np.int64)
    expected[:, 1:, 1:] = pixels.transpose(2, 0, 1).cumsum(axis=1).cumsum(axis=2)
    np.testing.assert_array_equal(table, expected)
    assert table[:, 61, 83].tolist() == pixels.reshape(-1, 3).sum(axis=0).tolist()


def test_area_resize_is_torchs_area_interpolation():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (97, 131, 3), np.uint8)
    table = M.summed_area_table(pixels)
    reference = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    for size in ((58, 79), (24, 24), (200, 150), (1, 1)):
        expected = torch.nn.functional.interpolate(reference, size=size, mode="area")[0].numpy()
        np.testing.assert_allclose(M.resize_area(table, size), expected, atol=1e-3)


def test_crops_are_torchs_area_interpolation_of_each_clipped_box():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (80, 120, 3), np.uint8)
    boxes = np.array([[10.7, 5.2, 50.1, 44.9, 0.9], [-8, -3, 30, 35, 0.8], [100, 60, 140, 100, 0.7],
                      [3, 4, 9, 10, 0.6]], np.float32)
    kept, crops = M._crops(M.summed_area_table(pixels), boxes, 80, 120, 24)
    assert len(kept) == len(boxes) and crops.shape == (4, 3, 24, 24)
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    for box, crop in zip(boxes, crops):
        x1, y1 = max(int(box[0]), 1) - 1, max(int(box[1]), 1) - 1
        x2, y2 = min(int(box[2]), 120), min(int(box[3]), 80)
        expected = torch.nn.functional.interpolate(image[:, :, y1:y2, x1:x2], size=(24, 24), mode="area")[0]
        np.testing.assert_allclose(crop, ((expected - 127.5) * 0.0078125).numpy(), atol=1e-5)


def test_nms_keeps_what_torchvision_keeps():
    from torchvision.ops import nms as torchvision_nms

    rng = np.random.default_rng(2)
    corners = rng.uniform(0, 100, (300, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, (300, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for threshold in (0.5, 0.7):
        expected = torchvision_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        np.testing.assert_array_equal(M.nms(boxes, scores, threshold), expected)


def test_nms_through_the_overlap_matrix_keeps_what_box_by_box_keeps():
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 100, (400, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(0, 40, (400, 2)).astype(np.float32)], axis=1)
    boxes[:5, 2:] = boxes[:5, :2]  # empty boxes: 0/0 overlaps
    order = np.argsort(-rng.uniform(0, 1, 400).astype(np.float32), kind="stable")
    for minimum, inclusive in ((False, False), (True, True)):
        for threshold in (0.5, 0.7):
            matrix = M._greedy_nms(boxes, order, threshold, minimum, inclusive)
            np.testing.assert_array_equal(matrix, M._greedy_nms_rows(boxes, order, threshold, minimum, inclusive))


def test_no_candidates_no_faces(torch_nets):
    boxes, points = M.detect_faces(np.full((120, 160, 3), 128, np.uint8), MTCNN_MIN_SIZE, torch_nets)
    assert boxes.shape == (0, 5) and points.shape == (0, 5, 2)
