"""FaceNet (InceptionResnetV1): its crop, its preprocessing, and its embedders in torch and ONNX Runtime.

The crop is the one the CASIA-WebFace weights were trained on: the MTCNN box widened by a margin
of 44 px at 182x182 (so 44/138 of the box size in all), resized to 182x182, then the central
160x160. Pixels are scaled as (x - 127.5) / 128. On 1,200 LFW pairs this beat a 160x160 crop with
margin 14 by half a point and per-image prewhitening by 1.5 to 2 points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facebatch.imageload import DecodedPhoto
from facebatch.models.detection import UPRIGHT
from facebatch.models.weights import Weights, load_embedding_model

if TYPE_CHECKING:
    import torch  # imported where used: scan's driver imports this module and never needs torch

    from facebatch.models.onnx_models import OnnxModel

# Part of FaceNet's net tag: embeddings made with another crop are not comparable.
PREPROCESSING = "box-margin44-182-centre160"
ALIGNED_SIZE = 182
MARGIN = 44
INPUT_SIZE = 160
DIM = 512


def crop_region(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The face box widened by the training margin, clipped to the image (as the training crops were)."""
    x1, y1, x2, y2 = box
    grow_x = MARGIN * (x2 - x1) / (ALIGNED_SIZE - MARGIN) / 2
    grow_y = MARGIN * (y2 - y1) / (ALIGNED_SIZE - MARGIN) / 2
    return (
        max(0, int(x1 - grow_x)),
        max(0, int(y1 - grow_y)),
        min(width, int(math.ceil(x2 + grow_x))),
        min(height, int(math.ceil(y2 + grow_y))),
    )


def needed_scale(box: Sequence[float], width: int, height: int) -> float:
    """Decoded pixels per original pixel that the face's crop needs to keep >= 182 px (1: full size).

    Decoding a 12-megapixel JPEG at 1/2 or 1/4 scale is several times faster, and loses nothing
    when even the smallest crop is still larger than the 182 px it is resized to.
    """
    x1, y1, x2, y2 = crop_region(box, width, height)
    return min(1.0, ALIGNED_SIZE / max(1, min(x2 - x1, y2 - y1)))


def face_crop(photo: DecodedPhoto, box: Sequence[float], rotation: int = 0) -> np.ndarray:
    """The 160x160 RGB uint8 input for one face; `box` in original pixels, the photo at any scale;
    `rotation`: the turn that shows the face upright (models.detection, --find-rotated)."""
    x1, y1, x2, y2 = (round(v * photo.scale) for v in crop_region(box, photo.width, photo.height))
    region = photo.image.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
    if rotation:
        region = region.transpose(UPRIGHT[rotation])
    aligned = region.resize((ALIGNED_SIZE, ALIGNED_SIZE), Image.Resampling.BILINEAR)
    offset = (ALIGNED_SIZE - INPUT_SIZE) // 2
    return np.asarray(aligned, dtype=np.uint8)[offset : offset + INPUT_SIZE, offset : offset + INPUT_SIZE]


def to_model_input(crops: np.ndarray) -> np.ndarray:
    """(N, 160, 160, 3) uint8 -> (N, 3, 160, 160) float32, (x - 127.5) / 128: every runtime's input."""
    return (np.ascontiguousarray(crops.transpose(0, 3, 1, 2)).astype(np.float32) - 127.5) / 128.0


def to_input(crops: np.ndarray) -> torch.Tensor:
    """to_model_input as a torch tensor."""
    import torch

    return torch.from_numpy(to_model_input(crops))


class FaceEmbedder:
    """Built once per worker: InceptionResnetV1 with the chosen weights, in torch."""

    def __init__(self, weights: Weights, device: str = "cpu", batch_size: int = 32) -> None:
        import torch

        self.weights = weights
        self.device = device
        self.batch_size = batch_size
        # Channels-last weights and input: NHWC max-pool and convolutions on the CPU, ~18% faster
        # than NCHW (see detection.py), same embeddings to 1e-7.
        self.model = load_embedding_model(weights, device).to(memory_format=torch.channels_last)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings, (N, 512), for (N, 160, 160, 3) uint8 crops."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = to_input(crops[start : start + self.batch_size])
                batch = batch.to(self.device, memory_format=torch.channels_last)
                out.append(torch.nn.functional.normalize(self.model(batch), dim=1).cpu().numpy())
        if not out:
            return np.zeros((0, DIM), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)


class OnnxFaceEmbedder:
    """InceptionResnetV1 exported to ONNX (fp32, or int8: models.quantize), run in ONNX Runtime
    without torch; the same crops and preprocessing as FaceEmbedder."""

    def __init__(self, weights: Weights, model: OnnxModel, precision: str, threads: int, batch_size: int = 32) -> None:
        self.weights = weights
        self.batch_size = batch_size
        self.session = model.session(threads)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings, (N, 512), for (N, 160, 160, 3) uint8 crops."""
        out = [
            self.session.run(None, {"input": to_model_input(crops[start : start + self.batch_size])})[0]
            for start in range(0, len(crops), self.batch_size)
        ]
        if not out:
            return np.zeros((0, DIM), np.float32)
        embeddings = np.concatenate(out).astype(np.float32, copy=False)
        # The graph ends in facenet-pytorch's normalisation; int8 rounding leaves norms a hair off 1.
        return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


Embedder = FaceEmbedder | OnnxFaceEmbedder
