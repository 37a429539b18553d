"""What the review pages show, from the tables alone (no photo is opened): the same model for the
static report and the review server."""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from facebatch.people.suggestions import STATUS_CONFIRMED, STATUS_SUGGESTED, STATUS_UNKNOWN, LiveFaces, face_tags
from facebatch.people.view import View, build_view
from facebatch.review.thumbnails import FaceBox
from facebatch.schema import LIVE_STATUSES, UNCLUSTERED
from facebatch.store import FailedPhoto, Library
from facebatch.wording import counted

FACES_PER_PAGE = 200
CLUSTERS_PER_INDEX_PAGE = 30
STRIP_FACES = 8  # so an index page holds at most 30 x 8 = 240 thumbnails


@dataclass(slots=True)
class Face:
    source: FaceBox  # where its thumbnail is cropped from
    photo_id: str
    cluster_id: int
    person: str | None
    status: str  # confirmed, suggested, unknown
    confidence: float
    fit: float  # distance to the centre of its cluster's other faces (nan: alone or unclustered)
    fit_confidence: float | None  # that it is its cluster's person, on the model's scale (None: no fit)

    @property
    def face_id(self) -> str:
        return self.source.face_id

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def note(self) -> str:
        """What the face card says under the name."""
        if self.status == "confirmed":
            return "confirmed"
        if self.status == "suggested":
            return f"suggested {percent(self.confidence)}"
        fit = self.fit_confidence
        return f"fits {percent(fit)}" if fit is not None and self.cluster_id != UNCLUSTERED else ""


def percent(chance: float) -> str:
    """A chance with the digits that tell 99.2% from 99.97% (most faces of a cluster fit above 99%)."""
    if chance >= 0.9999:
        return "> 99.99%"
    return f"{chance:.2%}" if chance >= 0.99 else f"{chance:.0%}"


@dataclass(frozen=True)
class Question:
    """A face that waits for a look: is it `name`? (a suggestion, or a face at a named cluster's
    edge that naming the cluster did not confirm)."""

    face: Face
    name: str
    confidence: float  # that it is `name`: the suggestion's, or its fit to the cluster


@dataclass
class Suggestion:
    cluster_id: int
    person: str | None
    size: int
    distance: float


@dataclass
class Cluster:
    cluster_id: int
    person: str | None
    ignored: bool
    conflict: str | None
    suggestion: Suggestion | None = None  # for an unnamed cluster: the one it may be
    faces: list[Face] = field(default_factory=list)  # confirmed first, then best fit first

    @property
    def title(self) -> str:
        return f"Cluster {self.cluster_id}"

    @property
    def photos(self) -> int:
        return len({f.photo_id for f in self.faces})


@dataclass
class Photo:
    photo_id: str
    path: str
    width: int
    height: int
    face_ids: list[str] = field(default_factory=list)
    frame_time: float | None = None  # a video: the frame its page shows (its first face's)

    def shows(self, face: Face) -> bool:
        """Whether the face's box belongs on the image the page shows (a video's faces are each
        in their own frame)."""
        return face.source.video_time == self.frame_time


@dataclass
class Site:
    clusters: list[Cluster]  # not ignored, largest first
    ignored: list[Cluster]
    unclustered: list[Face]
    people: dict[str, list[Face]]  # name -> confirmed and suggested faces, confirmed first
    photos: dict[str, Photo]
    names: list[str]  # every name given, for the name boxes' autocomplete
    by_id: dict[str, Face] = field(default_factory=dict)
    failed: list[FailedPhoto] = field(default_factory=list)  # files the scan could not use
    queue: list[Question] = field(default_factory=list)  # faces waiting for a look, least sure first

    def faces_of(self, photo: Photo) -> list[Face]:
        return [self.by_id[f] for f in photo.face_ids if f in self.by_id]

    @property
    def faces(self) -> int:
        return sum(len(c.faces) for c in self.clusters) + len(self.unclustered)

    def cluster(self, cluster_id: int) -> Cluster | None:
        return next((c for c in [*self.clusters, *self.ignored] if c.cluster_id == cluster_id), None)



@dataclass
class Scanned:
    """What only a scan changes, read once and kept by the review server between clicks."""

    live: LiveFaces
    photos: dict[str, Photo]  # live photos by id, with their face ids
    boxes: dict[str, FaceBox]
    failed: list[FailedPhoto]  # files the scan could not use

    @staticmethod
    def read(library: Library) -> Scanned:
        faces = library.read_faces(["face_id", "photo_id", "path", "box", "rotation", "video_time", "embedding", "quality"])
        live = LiveFaces.of(library, faces)
        photos = _photos(library)
        for face_id, photo_id, time in zip(live.face_ids, live.photo_ids, faces["video_time"].to_pylist()):
            if photo_id in photos:
                if not photos[photo_id].face_ids:
                    photos[photo_id].frame_time = time
                photos[photo_id].face_ids.append(face_id)
        return Scanned(live, photos, _face_boxes(faces, photos), library.failed_photos())


def collect(library: Library, view: View | None = None, scanned: Scanned | None = None) -> Site:
    """Faces, clusters and names from the tables: nothing here opens a photo."""
    view = build_view(library) if view is None else view
    scanned = Scanned.read(library) if scanned is None else scanned
    tags = face_tags(library, view=view, live=scanned.live)
    boxes = scanned.boxes
    fit = dict(zip(view.face_ids.tolist(), view.distance.tolist()))
    clusters = {
        c: Cluster(c, info.person, info.ignored, info.conflict_line() if info.conflict else None)
        for c, info in view.clusters.items()
    }
    for c, info in view.clusters.items():
        if info.suggestion:
            other = view.clusters[info.suggestion.cluster_id]
            clusters[c].suggestion = Suggestion(other.cluster_id, other.person, other.size, info.suggestion.distance)
    unclustered: list[Face] = []
    people: dict[str, list[Face]] = {}
    by_id: dict[str, Face] = {}
    for i, face_id in enumerate(tags.face_ids):
        distance = float(fit.get(face_id, math.nan))
        face = Face(boxes[face_id], tags.photo_ids[i], int(tags.cluster_ids[i]), tags.person[i], tags.status[i],
                    float(tags.confidence[i]), distance,
                    None if math.isnan(distance) else float(view.scale.confidence(distance)))
        by_id[face_id] = face
        cluster = clusters.get(face.cluster_id)
        (cluster.faces if cluster else unclustered).append(face)
        if face.person:
            people.setdefault(face.person, []).append(face)
    for cluster in clusters.values():
        cluster.faces.sort(key=lambda f: (f.status != STATUS_CONFIRMED, _fit_key(f.fit), f.face_id))
    for named in people.values():
        named.sort(key=lambda f: (f.status != STATUS_CONFIRMED, -f.confidence, f.face_id))
    ordered = sorted((c for c in clusters.values() if c.faces), key=lambda c: (-len(c.faces), c.cluster_id))
    queue = _questions(by_id.values(), clusters, view)
    return Site(
        [c for c in ordered if not c.ignored],
        [c for c in ordered if c.ignored],
        unclustered,
        dict(sorted(people.items(), key=lambda kv: (-len(kv[1]), kv[0]))),
        scanned.photos,
        sorted(set(people) | set(view.labels.names())),
        by_id,
        scanned.failed,
        queue,
    )


def _questions(faces: Iterable[Face], clusters: dict[int, Cluster], view: View) -> list[Question]:
    """Every suggestion, and every unconfirmed face of a named cluster (its edge, or photos that
    joined since the name): least sure first."""
    out = []
    for face in faces:
        if face.status == STATUS_SUGGESTED and face.person:
            out.append(Question(face, face.person, face.confidence))
            continue
        cluster = clusters.get(face.cluster_id)
        if (face.status == STATUS_UNKNOWN and cluster and cluster.person and not cluster.ignored
                and cluster.person not in view.labels.nots.get(face.face_id, ())):
            out.append(Question(face, cluster.person, face.fit_confidence or 0.0))
    return sorted(out, key=lambda q: (q.confidence, q.face.face_id))


def _fit_key(distance: float) -> float:
    return distance if distance == distance else 9.0  # nan (alone) last


def _photos(library: Library) -> dict[str, Photo]:
    """Live photos by photo_id (one path each: the latest row of that content)."""
    table = library.read_table("photos", ["photo_id", "path", "width", "height", "status"])
    photos: dict[str, Photo] = {}
    for photo_id, path, width, height, status in zip(*(table[c].to_pylist() for c in table.column_names)):
        if photo_id and status in LIVE_STATUSES:
            photos[photo_id] = Photo(photo_id, path, width or 0, height or 0)
    return photos


def _face_boxes(faces: pa.Table, photos: dict[str, Photo]) -> dict[str, FaceBox]:
    """face_id -> its box and photo, for the whole site."""
    long_side = {p: max(photo.width, photo.height) for p, photo in photos.items()}
    columns = ("face_id", "photo_id", "path", "box", "rotation", "video_time")
    return {
        f: FaceBox(f, path, tuple(box), long_side.get(photo, 0), turn or 0, time)
        for f, photo, path, box, turn, time in zip(*(faces[c].to_pylist() for c in columns))
    }


# --------------------------------------------------------------------------- paging and names


def chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)] or [[]]


def person_slug(name: str) -> str:
    """A file or URL name for any name: readable ASCII where possible, a hash keeps it unique."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_name).strip("-").lower()[:40]
    return f"{slug or 'x'}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def counts(faces: Sequence[Face]) -> str:
    return f"{counted(len(faces), 'face')} in {counted(len({f.photo_id for f in faces}), 'photo')}"
