"""Face detection: facenet-pytorch's MTCNN on a downscaled copy, results in original pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facebatch.config import DetectionSettings
from facebatch.imageload import DecodedPhoto

# MTCNN's smallest useful face at the detection scale: PNet's window is 12 px, and below ~20 px
# the pyramid grows (and the time with it) for faces too small to embed anyway.
MTCNN_MIN_SIZE = 20
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults for the three stages
MTCNN_SCALE_FACTOR = 0.709


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels, inside the photo
    score: float
    landmarks: tuple[float, ...]  # 5 x,y pairs in original pixels

    @property
    def short_side(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


class FaceDetector:
    """Built once per worker: the three MTCNN networks ship inside facenet-pytorch."""

    def __init__(self, settings: DetectionSettings, device: str = "cpu") -> None:
        import torch  # here, not at the top: scan's driver imports this module and never needs torch
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(device=device)
        self.settings = settings
        self.device = device
        # Channels-last (NHWC): torch's NCHW max-pool on the CPU is 6-14x slower than its NHWC one,
        # and NHWC weights make every layer after them NHWC (detection 20-30% faster, same boxes).
        nets = (mtcnn.pnet, mtcnn.rnet, mtcnn.onet)
        self._nets = tuple(net.eval().to(memory_format=torch.channels_last) for net in nets)

    def detect(self, photo: DecodedPhoto) -> list[Face]:
        """Every face in the photo with score >= min_score and size >= min_face, best first."""
        image, to_original = detection_copy(photo, self.settings.max_side)
        min_size = max(MTCNN_MIN_SIZE, self.settings.min_face / to_original)
        if min(image.size) < min_size:  # smaller than the smallest face: MTCNN has no scale to run
            return []
        boxes, points = self._run_mtcnn(np.asarray(image), min_size)
        faces = [
            _to_face(box, landmarks, to_original, photo.width, photo.height)
            for box, landmarks in zip(boxes, points)
        ]
        kept = [f for f in faces if f.score >= self.settings.min_score and f.short_side >= self.settings.min_face]
        return sorted(kept, key=lambda f: -f.score)

    def _run_mtcnn(self, pixels: np.ndarray, min_size: float) -> tuple[np.ndarray, np.ndarray]:
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        pnet, rnet, onet = self._nets
        with torch.inference_mode():
            batch_boxes, batch_points = detect_face(
                pixels[None], min_size, pnet, rnet, onet, list(MTCNN_THRESHOLDS), MTCNN_SCALE_FACTOR, self.device
            )
        # Under numpy 2 these can come back as object arrays.
        boxes = np.asarray(batch_boxes[0], dtype=float).reshape(-1, 5)
        points = np.asarray(batch_points[0], dtype=float).reshape(-1, 5, 2)
        return boxes, points


def detection_copy(photo: DecodedPhoto, max_side: int) -> tuple[Image.Image, float]:
    """The photo with its long side capped at max_side, and the factor back to original pixels."""
    image = photo.image
    long_side = max(image.size)
    if long_side > max_side:
        ratio = max_side / long_side
        size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image, photo.width / image.width


def _to_face(box: np.ndarray, landmarks: np.ndarray, to_original: float, width: int, height: int) -> Face:
    x1, y1, x2, y2 = (box[:4] * to_original).tolist()
    clipped = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    return Face(box=clipped, score=float(box[4]), landmarks=tuple((landmarks * to_original).reshape(-1).tolist()))
