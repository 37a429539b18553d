"""facebatch.models.detection: MTCNN in channels-last layout finds exactly what the stock layout finds."""

from __future__ import annotations

import numpy as np
import torch

from conftest import SAMPLE_DATA
from facebatch.config import DetectionSettings
from facebatch.models.detection import FaceDetector
from facebatch.models.mtcnn import TorchMtcnnNets
from facebatch.imageload import decode_photo

PHOTOS = ["groups/situation_room_2011.jpg", "people/barack_obama/1.jpg", "people/eileen_collins/1.png"]


def test_channels_last_nets_find_the_same_faces_as_the_stock_layout():
    detector = FaceDetector(DetectionSettings(), TorchMtcnnNets())
    stock_nets = TorchMtcnnNets()
    stock_nets._nets = tuple(net.to(memory_format=torch.contiguous_format) for net in stock_nets._nets)
    stock = FaceDetector(DetectionSettings(), stock_nets)
    for name in PHOTOS:
        photo = decode_photo((SAMPLE_DATA / name).read_bytes())
        faces, expected = detector.detect(photo), stock.detect(photo)
        assert len(faces) == len(expected) > 0, name
        for face, reference in zip(faces, expected):
            np.testing.assert_allclose(face.box, reference.box, atol=0.01)
            np.testing.assert_allclose(face.landmarks, reference.landmarks, atol=0.01)
            assert abs(face.score - reference.score) < 1e-5
