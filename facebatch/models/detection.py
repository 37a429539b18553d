"""Face detection: MTCNN (models.mtcnn) on a downscaled copy, results in original pixels.

MTCNN finds upright faces. A photo held sideways with no orientation tag (an old scan, a camera
that wrote none) shows its faces turned by 90 degrees: with `find_rotated`, a photo where the
upright pass found nobody is looked at again turned a quarter clockwise and a quarter
counter-clockwise, and the turn that finds more faces (or surer ones) wins; its faces are given
in the photo's own coordinates with that turn (`Face.rotation`), which the crops undo.
"""

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
    rotation: int = 0  # degrees clockwise the photo was turned to find the face upright: 0, 90 or 270

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
        pixels, to_original = detection_copy(photo, self.settings.max_side)
        min_size = max(MTCNN_MIN_SIZE, self.settings.min_face / to_original)
        if min(pixels.shape[:2]) < min_size:  # smaller than the smallest face: MTCNN has no scale to run
            return []
        faces = self._detect_turned(pixels, 0, min_size, to_original, photo)
        if faces or not self.settings.find_rotated:
            return faces
        # Both turns: MTCNN also finds some faces upside down (score 0.99 on a sample_data portrait
        # turned the wrong way); the turn that shows them upright finds more, or surer ones.
        found = [self._detect_turned(pixels, turn, min_size, to_original, photo) for turn in ROTATIONS]
        return max(found, key=lambda turned: (len(turned), max((f.score for f in turned), default=0.0)))

    def _detect_turned(self, pixels: np.ndarray, turn: int, min_size: float, to_original: float,
                       photo: DecodedPhoto) -> list[Face]:
        """The faces kept in the detection copy turned `turn` degrees clockwise, best first, in the
        photo's own original pixels."""
        height, width = pixels.shape[:2]
        # np.rot90 turns counter-clockwise; a view, which the summed-area table copies once.
        boxes, points = detect_faces(np.rot90(pixels, -turn // 90), min_size, self.nets)
        faces = []
        for box, landmarks in zip(boxes.astype(float), points.astype(float)):
            box[:4], landmarks = _unturn(box[:4], landmarks, turn, width, height)
            faces.append(_to_face(box, landmarks, to_original, photo.width, photo.height, turn))
        kept = [f for f in faces if f.score >= self.settings.min_score and f.short_side >= self.settings.min_face]
        return sorted(kept, key=lambda f: -f.score)


def detection_copy(photo: DecodedPhoto, max_side: int) -> tuple[np.ndarray, float]:
    """The photo's (H, W, 3) pixels with the long side capped at max_side, and the factor back to
    original pixels."""
    image = photo.image
    long_side = max(image.size)
    if long_side <= max_side:
        return photo.pixels, photo.width / image.width
    ratio = max_side / long_side
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)), photo.width / size[0]


# The turns tried after an upright pass found nobody: a quarter clockwise and counter-clockwise.
ROTATIONS = (90, 270)
# A turn clockwise, as PIL's transposes say it (they turn counter-clockwise): what shows a face
# found with Face.rotation upright, in the detection copy, a crop or a thumbnail.
UPRIGHT = {90: Image.Transpose.ROTATE_270, 270: Image.Transpose.ROTATE_90}


def _unturn(box: np.ndarray, points: np.ndarray, turn: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A box (x1, y1, x2, y2) and (5, 2) points found in the copy turned `turn` degrees clockwise,
    back in the unturned copy (`width` x `height`)."""
    if turn == 0:
        return box, points
    xs, ys = np.array([box[0], box[2]]), np.array([box[1], box[3]])
    if turn == 90:  # turned (x', y') = (height - y, x)
        bx, by, px, py = ys, height - xs, points[:, 1], height - points[:, 0]
    else:  # 270: turned (x', y') = (y, width - x)
        bx, by, px, py = width - ys, xs, width - points[:, 1], points[:, 0]
    return np.array([bx.min(), by.min(), bx.max(), by.max()]), np.stack([px, py], axis=1)


def _to_face(box: np.ndarray, landmarks: np.ndarray, to_original: float, width: int, height: int,
             rotation: int = 0) -> Face:
    x1, y1, x2, y2 = (box[:4] * to_original).tolist()
    clipped = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    return Face(box=clipped, score=float(box[4]), landmarks=tuple((landmarks * to_original).reshape(-1).tolist()),
                rotation=rotation)
