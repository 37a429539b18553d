"""Recognition (1:K): who is each face of a photo, among the people named in the library?

Every face of the photo is embedded exactly as `scan` does and compared with the library's
confirmed faces (its own labels and members of named clusters). A person's distance is that of
their nearest confirmed face; the best person is accepted within the same distance as the tag
suggestions (`labels.DEFAULT_SUGGEST_DISTANCE`, measured on lfw-dev: 97.6% of suggestions right),
with the same confidence (1 at distance 0, falling linearly to 0 at the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebatch.models.detection import Face
from facebatch.errors import FacebatchError
from facebatch.people.labels import DEFAULT_SUGGEST_DISTANCE, named_faces
from facebatch.scan.pipeline import FacePipeline
from facebatch.store import Library
from facebatch.people.verification import EXIT_ERROR, photo_faces, embed_crops


@dataclass(frozen=True)
class Candidate:
    person: str
    distance: float  # to that person's nearest confirmed face


@dataclass(frozen=True)
class IdentifiedFace:
    index: int  # best-first, as the library's face_index
    face: Face
    candidates: list[Candidate]  # nearest people first
    threshold: float

    @property
    def person(self) -> str | None:
        best = self.candidates[0] if self.candidates else None
        return best.person if best and best.distance <= self.threshold else None

    @property
    def confidence(self) -> float:
        if self.person is None:
            return 0.0
        return max(0.0, 1.0 - self.candidates[0].distance / self.threshold)

    def line(self) -> str:
        box = ", ".join(f"{v:.0f}" for v in self.face.box)
        others = "; ".join(f"{c.person} {c.distance:.3f}" for c in self.candidates[1:])
        if self.person:
            best = self.candidates[0]
            text = f"{self.person} (confidence {self.confidence:.2f}, distance {best.distance:.3f})"
        else:
            nearest = self.candidates[0]
            text = f"unknown (nearest {nearest.person} at {nearest.distance:.3f} > {self.threshold:.3f})"
        return f"face {self.index} at ({box}): {text}" + (f"; next: {others}" if others and self.person else "")

    def to_json(self) -> dict:
        return {
            "face": self.index,
            "box": [round(v, 1) for v in self.face.box],
            "score": round(self.face.score, 4),
            "person": self.person,
            "confidence": round(self.confidence, 4),
            "candidates": [{"person": c.person, "distance": round(c.distance, 4)} for c in self.candidates],
        }


def identify(
    library: Library,
    pipeline: FacePipeline,
    path: str,
    top_k: int = 3,
    threshold: float = DEFAULT_SUGGEST_DISTANCE,
) -> list[IdentifiedFace]:
    """Every face of the photo with its `top_k` nearest named people."""
    info = library.read_info() or {}
    if info.get("model") and info["model"] != pipeline.model:
        raise FacebatchError(
            f"library {library.root} holds embeddings from {info['model']}, not {pipeline.model}: "
            "use the same --weights as its scans"
        )
    names, gallery = named_faces(library)
    if not names:
        raise FacebatchError("nobody is named yet: `facebatch label cluster N NAME` names a cluster")
    faces, crops, _, _ = photo_faces(pipeline, path)
    if not faces:
        raise FacebatchError(f"no face found in {path}", exit_code=EXIT_ERROR)
    distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * embed_crops(pipeline, np.stack(crops)) @ gallery.T))
    people, owner = np.unique(np.asarray(names, dtype=object), return_inverse=True)  # sorted names
    nearest = np.full((len(faces), len(people)), np.inf)  # face x person: the closest face of each
    np.minimum.at(nearest.T, owner, distances.T)
    return [
        IdentifiedFace(
            i,
            face,
            [Candidate(str(people[j]), float(nearest[i, j])) for j in np.argsort(nearest[i])[:top_k]],
            threshold,
        )
        for i, face in enumerate(faces)
    ]
