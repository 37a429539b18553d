"""One scale for "is this face that person?": a distance, its calibrated confidence, one cut.

The distance from a face to a person is the Euclidean distance between the face's embedding and
the centre (normalised mean) of the person's confirmed faces; for a person known by one face it
is the plain distance between two faces, the one `verify` reports. The same distance, with the
same mapping and the same cut, names faces in `export`, the review pages and `identify`
(`cluster` judges membership on the same scale). `verify` answers the 1:1 question on this scale
with its own threshold and prints this confidence beside it (people.verification).

The confidence is the chance that the face is that person, fitted (logistic in the distance) on
the development mix (benchmarks/calibration.py): half of the people of lfw-many and lfw-dev named
by 20% or 50% of their photos, every other face of the mix (their other photos, the unnamed
people, lfw-strangers, background faces) compared with its nearest named person. On people the
fit never saw, a confidence of 0.9 was right 92% of the time (table in BENCHMARKS.md).

    distance   0.70  0.75  0.80  0.838  0.85  0.884  0.90  0.95  1.00
    confidence 0.996 0.98  0.93  0.80   0.73  0.50   0.38  0.12  0.03

A name is given (suggested, identified, "same person") at confidence >= 0.8, distance <= 0.838:
on the mix 0.3% of strangers got a suggestion and 98% of suggestions were right.
"""

from __future__ import annotations

import math

import numpy as np

# conf(d) = 1 / (1 + exp(SLOPE * (d - MIDPOINT))): benchmarks/calibration.py on the development mix.
SLOPE = 30.06
MIDPOINT = 0.8839
# The cut for every yes/no answer: suggestions, identify, verify.
NAME_CONFIDENCE = 0.8


def confidence(distance: np.ndarray | float) -> np.ndarray:
    """The chance that a face at this distance from a person is that person (nan stays nan)."""
    d = np.asarray(distance, np.float64)
    return 1.0 / (1.0 + np.exp(np.clip(SLOPE * (d - MIDPOINT), -50.0, 50.0)))


def distance_at(level: float) -> float:
    """The distance at which the confidence is `level` (0 < level < 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {level}")
    return MIDPOINT + math.log(1.0 / level - 1.0) / SLOPE


NAME_DISTANCE = distance_at(NAME_CONFIDENCE)
