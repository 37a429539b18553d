"""The one join every export writes from: each live face with its box and its tag, from one read
of the faces and one view of the clusters and labels."""

from __future__ import annotations

from dataclasses import dataclass

from facebatch.people.suggestions import LiveFaces, face_tags
from facebatch.people.view import build_view
from facebatch.store import Library


@dataclass(frozen=True, slots=True)
class TaggedFace:
    face_id: str
    photo_id: str
    box: list[float]  # x1, y1, x2, y2 in pixels of the photo as shown (faces.box)
    cluster_id: int | None  # None: in no cluster
    person: str | None
    status: str  # confirmed | suggested | unknown
    confidence: float | None  # None when nobody is named (0.0 would read as "surely not")
    video_time: float | None  # a video's face: its best frame (seconds); None for a photo's
    video_span: list[float] | None  # the first and last frame it is seen in


def tagged_faces(library: Library, min_confidence: float) -> list[TaggedFace]:
    """Every live face, in the faces table's order."""
    view = build_view(library)  # "no clusters yet" before any face is read
    faces = library.read_faces(["face_id", "photo_id", "box", "embedding", "quality", "video_time", "video_span"])
    tags = face_tags(library, min_confidence, view=view, live=LiveFaces.of(library, faces))
    return [
        TaggedFace(face_id, photo_id, box, None if cluster < 0 else cluster, person, status,
                   None if person is None else round(confidence, 4), time, span)
        for face_id, photo_id, box, cluster, person, status, confidence, time, span in zip(
            tags.face_ids, tags.photo_ids, faces["box"].to_pylist(), tags.cluster_ids.tolist(), tags.person,
            tags.status, tags.confidence.tolist(), faces["video_time"].to_pylist(), faces["video_span"].to_pylist())
    ]
