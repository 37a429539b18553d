"""How far a detected face can be trusted, from what detection already gave: box, score, landmarks.

quality = size x pose x detection, each 0..1 and 1 for a clear face:
- size: the box's shorter side, 0 at 20 px and 1 from 40 px (the embedders see 112-160 px crops:
  below 40 px a crop is mostly upsampling);
- pose: how far the nose lies off the line between the eyes' and the mouth's midpoints, in eye
  distances: 1 up to 0.5 (a face turned up to about 45 degrees), 0 from 0.8 (a profile: the nose
  beyond the eye);
- detection: MTCNN's score, 0 at 0.9 and 1 from 0.98.

Computed from stored columns, so a library scanned before gets it without detecting again
(store.Library fills it where a part has none). A face below MIN_QUALITY never anchors a cluster
and never receives a name automatically (people.grouping, people.suggestions); the user can still
name it. What the gate buys and costs on the development mix: BENCHMARKS.md, "Trust".
"""

from __future__ import annotations

import numpy as np

MIN_QUALITY = 0.5

SIZE_RANGE = (20.0, 40.0)  # pixels, shorter side of the box
POSE_RANGE = (0.5, 0.8)  # nose offset in eye distances (1 at the first, 0 at the second)
SCORE_RANGE = (0.9, 0.98)


def face_quality(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(n,) quality in 0..1 of faces with boxes (n, 4), detector scores (n,) and landmarks (n, 10)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    points = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    size = _ramp(side, *SIZE_RANGE)
    pose = 1.0 - _ramp(nose_offset(points), *POSE_RANGE)
    detection = _ramp(np.asarray(scores, np.float64).reshape(-1), *SCORE_RANGE)
    return (size * pose * detection).astype(np.float32)


def nose_offset(points: np.ndarray) -> np.ndarray:
    """(n,) the nose's distance from the eyes-to-mouth midline, in eye distances (0: frontal)."""
    eyes = (points[:, 0] + points[:, 1]) / 2
    mouth = (points[:, 3] + points[:, 4]) / 2
    axis = mouth - eyes
    axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-6)
    across = np.stack([axis[:, 1], -axis[:, 0]], axis=1)
    eye_distance = np.maximum(np.linalg.norm(points[:, 1] - points[:, 0], axis=1), 1e-6)
    return np.abs(np.einsum("ij,ij->i", points[:, 2] - eyes, across)) / eye_distance


def _ramp(value: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((value - low) / (high - low), 0.0, 1.0)
