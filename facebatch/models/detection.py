"""Face detection: MTCNN (models.mtcnn) on a downscaled copy, results in original pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facebatch.config import DetectionSettings
from facebatch.imageload import DecodedPhoto
from facebatch.models.mtcnn import MtcnnNets, TorchMtcnnNets, detect_faces

# MTCNN's smallest useful face at the detection scale: PNet's window is 12 px, and below ~20 px
# the pyramid grows (and the time with it) for faces too small to embed anyway.
MTCNN_MIN_SIZE = 20


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels, inside the photo
    score: float
    landmarks: tuple[float, ...]  # 5 x,y pairs in original pixels

    @property
    def short_side(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


class FaceDetector:
    """Built once per worker: MTCNN's three nets (facenet-pytorch's weights) in torch or ONNX Runtime."""

    def __init__(self, settings: DetectionSettings, nets: MtcnnNets | None = None) -> None:
        self.settings = settings
        self.nets = TorchMtcnnNets() if nets is None else nets

    def detect(self, photo: DecodedPhoto) -> list[Face]:
        """Every face in the photo with score >= min_score and size >= min_face, best first."""
        image, to_original = detection_copy(photo, self.settings.max_side)
        min_size = max(MTCNN_MIN_SIZE, self.settings.min_face / to_original)
        if min(image.size) < min_size:  # smaller than the smallest face: MTCNN has no scale to run
            return []
        boxes, points = detect_faces(np.asarray(image), min_size, self.nets)
        faces = [
            _to_face(box, landmarks, to_original, photo.width, photo.height)
            for box, landmarks in zip(boxes.astype(float), points.astype(float))
        ]
        kept = [f for f in faces if f.score >= self.settings.min_score and f.short_side >= self.settings.min_face]
        return sorted(kept, key=lambda f: -f.score)


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
