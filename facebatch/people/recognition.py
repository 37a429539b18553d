"""Recognition (1:K): who is each face of new photos, among the people named in the library?

Every face is embedded exactly as `scan` does and compared with the centre of each named
person's confirmed faces: the distance, and the confidence and cut of the library model's scale
(models.scale), the same as the export's suggestions. The models are built once for all the photos.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from facebatch.config import ModelSettings, runtime_and_precision, still_made
from facebatch.errors import InputError, NotFound, UsageError
from facebatch.models.detection import Face
from facebatch.models.embedding import same_model, split_model_tag
from facebatch.models.faces import FacePipeline
from facebatch.models.quality import MIN_QUALITY, face_quality
from facebatch.models.scale import NAME_CONFIDENCE
from facebatch.people.embeddings import new_face_embeddings
from facebatch.people.suggestions import People, named_gallery
from facebatch.people.verification import embed_crops, photo_faces
from facebatch.store import Library


@dataclass(frozen=True)
class Candidate:
    person: str
    distance: float  # to the centre of that person's confirmed faces
    confidence: float  # on the library model's scale


@dataclass(frozen=True)
class IdentifiedFace:
    index: int  # best-first, as the library's face_index
    face: Face
    candidates: list[Candidate]  # nearest people first
    min_confidence: float
    quality: float  # models.quality: below MIN_QUALITY a face is never named automatically

    @property
    def person(self) -> str | None:
        best = self.candidates[0] if self.candidates else None
        trusted = self.quality >= MIN_QUALITY
        return best.person if best and trusted and best.confidence >= self.min_confidence else None

    @property
    def confidence(self) -> float:
        return self.candidates[0].confidence if self.candidates else 0.0

    def line(self) -> str:
        box = ", ".join(f"{v:.0f}" for v in self.face.box)
        best = self.candidates[0]
        if self.person:
            text = f"{self.person} (confidence {best.confidence:.2f}, distance {best.distance:.3f})"
            others = "; ".join(f"{c.person} {c.confidence:.2f}" for c in self.candidates[1:])
            return f"face {self.index} at ({box}): {text}" + (f"; next: {others}" if others else "")
        if self.quality < MIN_QUALITY:
            return (f"face {self.index} at ({box}): unknown (quality {self.quality:.2f} < {MIN_QUALITY}: too small, "
                    f"turned away or unsure; nearest {best.person}, confidence {best.confidence:.2f})")
        return (f"face {self.index} at ({box}): unknown (nearest {best.person}, confidence {best.confidence:.2f} "
                f"< {self.min_confidence:.2f})")

    def to_json(self) -> dict:
        return {
            "face": self.index,
            "box": [round(v, 1) for v in self.face.box],
            "score": round(self.face.score, 4),
            "quality": round(self.quality, 3),
            "person": self.person,
            "confidence": round(self.confidence, 4),
            "candidates": [{"person": c.person, "distance": round(c.distance, 4), "confidence": round(c.confidence, 4)}
                           for c in self.candidates],
        }


@dataclass(frozen=True)
class IdentifiedPhoto:
    path: str
    faces: list[IdentifiedFace]
    error: str | None = None  # the photo could not be read (no faces is not an error: `faces` is empty)

    def to_json(self) -> dict:
        return {"photo": self.path, "faces": [f.to_json() for f in self.faces], "error": self.error}


def library_models(library: Library, runtime: str | None, precision: str | None, device: str = "cpu",
                   embedding: str | None = None) -> ModelSettings:
    """The model, runtime and precision asked for; what is not asked for, as the library's
    embeddings were made."""
    recorded = library.model()
    if recorded and runtime is None and precision is None and device == "cpu":
        runtime, precision = runtime_and_precision(split_model_tag(recorded.tag)[1])
    return ModelSettings.choose(runtime, precision, device, embedding or (recorded.embedding if recorded else None)
                                or ModelSettings().embedding)


def check_model(library: Library, pipeline: FacePipeline) -> None:
    recorded = library.model()
    if recorded and not same_model(recorded.tag, pipeline.model):
        was, variant = split_model_tag(recorded.tag)
        if was == split_model_tag(pipeline.model)[0] and not still_made(variant, recorded.embedding):
            raise UsageError(f"library {library.root} holds embeddings made with {variant}, which this version no "
                             "longer makes: run `facebatch scan` to embed them again (names are kept)")
        raise UsageError(
            f"library {library.root} holds embeddings from {recorded.tag}, not {pipeline.model}: "
            "use the same --model, --weights, --runtime and --precision as its scans"
        )


def identify_photos(
    library: Library,
    pipeline: FacePipeline,
    paths: Iterable[str],
    top_k: int = 3,
    min_confidence: float = NAME_CONFIDENCE,
) -> Iterator[IdentifiedPhoto]:
    """Each photo with every face's `top_k` nearest named people; a photo that fails says why."""
    check_model(library, pipeline)
    people = named_gallery(library)
    if not people.names:
        raise NotFound("nobody is named yet: `facebatch label cluster N NAME` names a cluster")
    for path in paths:
        try:
            yield IdentifiedPhoto(path, identify_faces(library, pipeline, people, path, top_k, min_confidence))
        except InputError as error:
            yield IdentifiedPhoto(path, [], str(error))


def identify_faces(
    library: Library, pipeline: FacePipeline, people: People, path: str, top_k: int, min_confidence: float
) -> list[IdentifiedFace]:
    faces, crops, _, _ = photo_faces(pipeline, path)
    if not faces:
        return []
    scale = library.scale()
    distances = people.distances(new_face_embeddings(library, embed_crops(pipeline, crops)))
    confidence = scale.confidence(distances)
    quality = face_quality(np.array([f.box for f in faces]), np.array([f.score for f in faces]),
                           np.array([f.landmarks for f in faces]))
    return [
        IdentifiedFace(
            i, face,
            [Candidate(people.names[j], float(distances[i, j]), float(confidence[i, j])) for j in np.argsort(distances[i])[:top_k]],
            min_confidence, float(quality[i]),
        )
        for i, face in enumerate(faces)
    ]

