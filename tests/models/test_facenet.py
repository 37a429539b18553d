"""facebatch.models.facenet: the embedder's channels-last batches give the stock model's embeddings."""

from __future__ import annotations

import numpy as np
import torch

from conftest import SAMPLE_DATA
from facebatch.config import DetectionSettings
from facebatch.models.detection import FaceDetector
from facebatch.models.facenet import FaceEmbedder, face_crop, to_input
from facebatch.imageload import decode_photo
from facebatch.models.weights import load_embedding_model, resolve_weights


def real_crops() -> np.ndarray:
    photo = decode_photo((SAMPLE_DATA / "groups" / "situation_room_2011.jpg").read_bytes())
    faces = FaceDetector(DetectionSettings()).detect(photo)
    return np.stack([face_crop(photo, face.box) for face in faces])


def test_batches_match_the_stock_model_face_by_face():
    crops = real_crops()
    assert crops.shape[1:] == (160, 160, 3) and len(crops) >= 5
    weights = resolve_weights()
    embedder = FaceEmbedder(weights, batch_size=4)  # several batches and a remainder
    stock = load_embedding_model(weights)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(stock(to_input(crops)), dim=1).numpy()
    embeddings = embedder.embed(crops)
    assert embeddings.shape == (len(crops), 512) and embeddings.dtype == np.float32
    assert np.abs(embeddings - expected).max() < 1e-5


def test_no_crops_no_embeddings():
    assert FaceEmbedder(resolve_weights()).embed(np.zeros((0, 160, 160, 3), np.uint8)).shape == (0, 512)
