"""Each net's population mean: the average embedding of many different people, one face each.

Subtracting it before normalising spreads the faces over the sphere: FaceNet's CASIA-WebFace
weights were measured that way (facenet's `--subtract_mean`), and on LFW-style pairs it lifts
their accuracy from 98.4% to 99.2% (BENCHMARKS.md, "Embedding models"). The mean has to come from
many people: one made of a family library (half of it one person) lost the gain.

population_means.npz (package data) holds one mean per net and weights, keyed by the net's
identity, and `how`: the command and faces that made it (benchmarks/population_means.py, one
central face of each of lfw-strangers' 1,728 people). A net without a mean here (FaceNet with
other weights) can only be used uncentred.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facebatch.errors import UsageError

if TYPE_CHECKING:
    from facebatch.models.catalog import EmbeddingModel
    from facebatch.models.weights import Weights

MEANS_FILE = Path(__file__).with_name("population_means.npz")


def net_key(net: str, weights: Weights | None) -> str:
    """The identity a net's mean belongs to: FaceNet's weights, SFace's file."""
    from facebatch.models.sface import SFACE_SHA256

    if net == "facenet":
        assert weights is not None, "FaceNet needs its weights"
        return f"facenet:{weights.tag}"
    return f"sface@{SFACE_SHA256[:12]}"


@functools.cache
def shipped_means() -> dict[str, np.ndarray]:
    with np.load(MEANS_FILE) as data:
        return {key: data[key] for key in data.files}


def population_mean(net: str, weights: Weights | None) -> np.ndarray:
    mean = shipped_means().get(net_key(net, weights))
    if mean is None:
        raise UsageError(f"no population mean for {net} with weights {weights.name if weights else '-'}: centred models need "
                         "the default casia-webface weights (use --model facenet with other weights)")
    return mean.astype(np.float32)


def means_checksum(model: EmbeddingModel, weights: Weights | None) -> str:
    digest = hashlib.sha256()
    for net in model.nets:
        digest.update(population_mean(net, weights).tobytes())
    return digest.hexdigest()
