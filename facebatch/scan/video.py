"""One video on a worker: its sampled keyframes (videoload) detected and embedded as photos are,
then its faces grouped by person, so that someone in a video is one face row (the frame where they
are seen best, and the span they are seen in), not one per frame.

Grouping within a video: faces best first (quality, then size); each joins the nearest person of
the video whose centre is within the model's member distance, never a person already seen in the
same frame; else it is a new person. A model without a measured scale (other FaceNet weights)
groups nothing: each frame's faces stay apart rather than being joined on another model's numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from facebatch.imageload import DecodedPhoto
from facebatch.models.detection import Face
from facebatch.models.embedding import FaceGeometry
from facebatch.models.faces import FacePipeline, StageClock
from facebatch.models.quality import face_quality
from facebatch.videoload import VideoFrames


@dataclass(frozen=True)
class SeenFace:
    time: float
    face: Face
    embedding: np.ndarray


@dataclass
class VideoPerson:
    """One person of a video: `best` is where they are seen best; first and last, the span."""

    best: SeenFace
    first: float
    last: float


@dataclass
class _Person:
    total: np.ndarray
    members: list[SeenFace] = field(default_factory=list)
    times: set[float] = field(default_factory=set)

    def add(self, seen: SeenFace) -> None:
        self.total = self.total + seen.embedding
        self.members.append(seen)
        self.times.add(seen.time)

    def distance(self, x: np.ndarray) -> float:
        centre = self.total / max(float(np.linalg.norm(self.total)), 1e-12)
        return float(np.linalg.norm(x - centre))


def video_people(pipeline: FacePipeline, video: VideoFrames, seconds: Counter) -> list[VideoPerson]:
    """The people of one video, best seen first."""
    clock = StageClock(seconds)
    found: list[tuple[float, Face]] = []
    crops = []
    for frame in video.frames:
        photo = DecodedPhoto(frame.image, frame.image.width, frame.image.height)
        with clock("detect"):
            faces = pipeline.detector.detect(photo)
        with clock("crop"):
            crops += [pipeline.embedder.crops(photo, FaceGeometry(f.box, f.landmarks, f.rotation)) for f in faces]
        found += [(frame.time, f) for f in faces]
    with clock("embed"):
        embeddings = pipeline.embed(crops)
    scale = pipeline.embedder.model.scale
    seen = [SeenFace(t, f, x) for (t, f), x in zip(found, embeddings)]
    return group_people(seen, scale.member_distance if scale is not None else None)


def group_people(seen: list[SeenFace], member_distance: float | None) -> list[VideoPerson]:
    """Faces of one video into people (module docstring); None: each face its own."""
    if not seen:
        return []
    quality = face_quality(np.array([s.face.box for s in seen]), np.array([s.face.score for s in seen]),
                           np.array([s.face.landmarks for s in seen]))
    order = sorted(range(len(seen)), key=lambda i: (-quality[i], -seen[i].face.short_side, seen[i].time))
    people: list[_Person] = []
    for i in order:
        face = seen[i]
        candidates = [] if member_distance is None else [
            (p.distance(face.embedding), k) for k, p in enumerate(people) if face.time not in p.times]
        near = [(d, k) for d, k in candidates if d <= member_distance]
        if near:
            people[min(near)[1]].add(face)
        else:
            person = _Person(np.zeros_like(face.embedding, dtype=np.float64))
            person.add(face)
            people.append(person)
    return [VideoPerson(p.members[0], min(p.times), max(p.times)) for p in people]
