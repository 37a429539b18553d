"""The seam between faces and embedding models: which nets a model runs, how their outputs become
one vector, and the tag that says what made a stored embedding.

A model (models.catalog declares them, each with its measured distance scale) runs one or more
nets: FaceNet (models.facenet: a box crop) and SFace (models.sface: aligned by the five
landmarks). Each net's L2-normalised output is, for a centred model, moved by that net's
population mean (models/population_means.npz: one face each of many different people) and
normalised again; the parts are concatenated and scaled by 1/sqrt(parts), so the result is a
unit vector and Euclidean distances stay in 0..2 for every model.

A model tag names everything an embedding depends on: the model, each net's weights (name and
checksum), the means, and the runtime and precision (`onnx-int8`...). Embeddings of two tags
that differ only in runtime or precision are made again from the stored boxes and landmarks
when a library moves (scan's re-embed), as are those of another model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from facebatch.imageload import DecodedPhoto
from facebatch.models import facenet, sface
from facebatch.models.catalog import DEFAULT_MODEL, EmbeddingModel, model_named
from facebatch.models.scale import DistanceScale
from facebatch.models.means import means_checksum, population_mean

if TYPE_CHECKING:
    from facebatch.models.weights import Weights

# Embeddings made before runtimes and precisions were recorded came from torch in fp32.
LEGACY_VARIANT = "torch-fp32"


class NetEmbedder(Protocol):
    def embed(self, crops: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class FaceGeometry:
    """What the detector stored of a face, in original pixels: all a net needs for its crop."""

    box: Sequence[float]
    landmarks: Sequence[float]
    rotation: int = 0  # the turn that shows the face upright (--find-rotated); the landmarks align SFace anyway


# --------------------------------------------------------------------------- tags


# SFace always runs in ONNX Runtime (config.ModelSettings.sface_precision): a model without FaceNet is
# onnx-int8 or onnx-fp32, whatever --runtime says.
SFACE_VARIANTS = ("onnx-int8", "onnx-fp32")


def net_tags(model: EmbeddingModel, weights: Weights | None) -> list[str]:
    """Each net's identity: FaceNet's weights and crop, SFace's file checksum."""
    def tag(net: str) -> str:
        if net == "facenet":
            assert weights is not None, "FaceNet needs its weights"
            return f"{weights.tag}/{facenet.PREPROCESSING}"
        return f"sface@{sface.SFACE_SHA256[:12]}"

    return [tag(net) for net in model.nets]


def model_tag(model: EmbeddingModel, weights: Weights | None, variant: str = LEGACY_VARIANT) -> str:
    """What an embedding depends on. FaceNet alone keeps the tag it had before models had names
    (`casia-webface@9549dbb482ce/box-margin44-182-centre160/onnx-int8`), so no library moves.
    `weights`: FaceNet's, None for a model that does not run it."""
    nets = net_tags(model, weights)
    if "facenet" not in model.nets and variant not in SFACE_VARIANTS:
        variant = "onnx-fp32"  # torch-fp32: SFace in fp32, in ONNX Runtime
    if model.name == "facenet":
        return f"{nets[0]}/{variant}"
    means = f";mean@{means_key(model, weights)}" if model.centred else ""
    return f"{model.name}[{'+'.join(nets)}{means}]/{variant}"


def means_key(model: EmbeddingModel, weights: Weights | None) -> str:
    return means_checksum(model, weights)[:12]


def split_model_tag(tag: str) -> tuple[str, str]:
    """(everything but the variant, the variant: runtime-precision, `onnx-int8-sface-int8` for
    facenet+sface with both nets in int8) of a model tag; a tag from before variants were recorded
    is torch-fp32."""
    head, _, last = tag.rpartition("/")
    if head and "-" in last and "@" not in last and last.split("-")[0] in ("onnx", "torch"):
        return head, last
    return tag, LEGACY_VARIANT


def model_of_tag(tag: str) -> EmbeddingModel:
    """The model a tag was made by: its name before `[`, FaceNet for tags from before names."""
    name, bracket, _ = tag.partition("[")
    return model_named(name) if bracket else model_named("facenet")


def measured_scale(tag: str | None) -> DistanceScale | None:
    """The catalogue's scale for embeddings of this tag (None: the default model's): only when
    FaceNet, if the model runs it, has the weights the scale was measured with."""
    from facebatch.models.weights import CASIA_WEBFACE_SHA256

    model = model_named(DEFAULT_MODEL) if tag is None else model_of_tag(tag)
    if tag is not None and "facenet" in model.nets and f"casia-webface@{CASIA_WEBFACE_SHA256[:12]}" not in tag:
        return None
    return model.scale


def same_weights(a: str, b: str) -> bool:
    """Same model and weights, whatever the runtime and precision."""
    return split_model_tag(a)[0] == split_model_tag(b)[0]


def same_model(a: str, b: str) -> bool:
    """Two tags name the same embeddings (a tag without a variant is torch-fp32)."""
    return split_model_tag(a) == split_model_tag(b)


# --------------------------------------------------------------------------- crops and embedding


def needed_scale(model: EmbeddingModel, faces: Sequence[FaceGeometry], width: int, height: int) -> float:
    """Decoded pixels per original pixel that every crop of these faces needs (1: full size)."""
    scales = [0.0]
    for face in faces:
        if "facenet" in model.nets:
            scales.append(facenet.needed_scale(face.box, width, height))
        if "sface" in model.nets:
            scales.append(sface.needed_scale(face.landmarks))
    return min(1.0, max(scales))


def combine(parts: Sequence[np.ndarray], means: Sequence[np.ndarray | None]) -> np.ndarray:
    """The model's vectors from its nets' unit vectors: each centred (when it has a mean) and
    normalised, then concatenated and scaled back to unit length."""
    out = []
    for x, mean in zip(parts, means):
        x = np.asarray(x, np.float32)
        if mean is not None:
            x = x - mean
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        out.append(x)
    joined = np.concatenate(out, axis=1) if len(out) > 1 else out[0]
    return (joined / math.sqrt(len(out))).astype(np.float32, copy=False)


class ModelEmbedder:
    """A model's nets, built once per worker, run on batches of crops: unit vectors of model.dim."""

    def __init__(self, model: EmbeddingModel, weights: Weights | None, nets: Sequence[NetEmbedder], tag: str) -> None:
        self.model = model
        self.model_tag = tag
        self.nets = list(nets)
        self.means = [population_mean(net, weights) if model.centred else None for net in model.nets]

    @property
    def dim(self) -> int:
        return self.model.dim

    def crops(self, photo: DecodedPhoto, face: FaceGeometry) -> tuple[np.ndarray, ...]:
        """One face's input to each net of the model, in the model's net order."""
        return tuple(facenet.face_crop(photo, face.box, face.rotation) if net == "facenet"
                     else sface.aligned_face(photo, face.landmarks) for net in self.model.nets)

    def embed(self, per_face: Sequence[tuple[np.ndarray, ...]]) -> np.ndarray:
        """(N, dim) unit vectors for N faces' crops (as `crops` returns them): each net runs once
        on all of its crops."""
        if not per_face:
            return np.zeros((0, self.dim), np.float32)
        batches = [np.stack([face[i] for face in per_face]) for i in range(len(self.nets))]
        return combine([net.embed(batch) for net, batch in zip(self.nets, batches)], self.means)


