"""A model's distance scale: what a distance between two of its embeddings means.

Every embedding model puts faces on its own scale: FaceNet's CASIA-WebFace weights call two faces
one person below about 1.1, SFace's space well below that. So the numbers that turn a distance
into a decision travel with the model (models.catalog declares one per model), never as module
constants: the member and merge distances of `cluster`, the threshold of `verify`, and the
confidence mapping behind suggestions, `identify`, the review's fit and the adapter's checks.

The confidence is the chance that a face at distance d from a person's centre is that person,
logistic in d and fitted on the development mix (benchmarks/model_scales.py):

    conf(d) = 1 / (1 + exp(slope * (d - midpoint)))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

# The cut for every yes/no answer (suggestions, identify, a name given automatically): a chance,
# the same for every model; each model's scale says at which distance it falls.
NAME_CONFIDENCE = 0.8
# A face less likely than this to be any named person is nobody named (the adapter's background).
BACKGROUND_CONFIDENCE = 0.03


@dataclass(frozen=True)
class DistanceScale:
    """The numbers of one model's space, and how they were measured."""

    slope: float  # of the logistic confidence
    midpoint: float  # distance at confidence 0.5
    verify_threshold: float  # `verify`: one person at or below (best accuracy on LFW-style pairs)
    member_distance: float  # `cluster`: a face farther from its group's centre is not a member
    merge_distance: float  # `cluster`: groups whose centres are closer are one person
    # The member distance grows this much per doubling of a group beyond 10 faces (a big group's
    # centre is better known, so a stranger's distance to it grows).
    member_growth: float = 0.01
    measured: str = ""  # the command and data that measured it

    def __post_init__(self) -> None:
        for name in ("midpoint", "verify_threshold", "member_distance", "merge_distance"):
            if not 0.0 < getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be in (0, 2], got {getattr(self, name)}")
        if self.slope <= 0:
            raise ValueError(f"slope must be positive, got {self.slope}")

    def confidence(self, distance: np.ndarray | float) -> np.ndarray:
        """The chance that a face at this distance from a person is that person (nan stays nan)."""
        d = np.asarray(distance, np.float64)
        return 1.0 / (1.0 + np.exp(np.clip(self.slope * (d - self.midpoint), -50.0, 50.0)))

    def distance_at(self, level: float) -> float:
        """The distance at which the confidence is `level` (0 < level < 1)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"confidence must be between 0 and 1, got {level}")
        return self.midpoint + math.log(1.0 / level - 1.0) / self.slope

    def cut_distance(self, level: float) -> float:
        """The farthest distance named at confidence >= `level`; 0 and 1 mean everything and nothing."""
        if level <= 0.0:
            return 2.0
        if level >= 1.0:
            return -1.0
        return self.distance_at(level)

    @property
    def name_distance(self) -> float:
        """The farthest distance that is given a name (confidence NAME_CONFIDENCE)."""
        return self.distance_at(NAME_CONFIDENCE)

    @property
    def background_distance(self) -> float:
        return self.distance_at(BACKGROUND_CONFIDENCE)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DistanceScale:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
