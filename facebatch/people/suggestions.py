"""Per-face tags: confirmed, suggested or unknown, with a calibrated confidence. Tables only.

- confirmed: the user named this face, or named its cluster while the face was in its core, and
  the face is still in a cluster of that person (confidence 1).
- suggested: the nearest named person, by the distance to the centre of their confirmed faces,
  with confidence >= the cut (on the model's scale: models.scale). Never a name the face is "not", never while
  its cluster is ignored, never a face of low quality (models.quality), and never two faces of one
  photo under one name: the better one keeps it, the other falls back to its next person or to
  unknown. Faces at the edge of a named cluster (outside its core) are suggested this way until
  the user looks at them.
- unknown: everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from facebatch.models.quality import MIN_QUALITY
from facebatch.models.scale import NAME_CONFIDENCE, DistanceScale
from facebatch.people.embeddings import face_embeddings
from facebatch.people.view import View, build_view
from facebatch.schema import UNCLUSTERED
from facebatch.store import Library

STATUS_CONFIRMED, STATUS_SUGGESTED, STATUS_UNKNOWN = "confirmed", "suggested", "unknown"
CANDIDATES = 3  # people tried per face when a better face of its photo took the first one
BLOCK = 4096  # faces compared with every person at once (memory: BLOCK x people)


@dataclass
class FaceTags:
    """One row per live face, in the faces table's order."""

    face_ids: list[str]
    photo_ids: list[str]
    cluster_ids: np.ndarray
    person: list[str | None]
    status: list[str]
    confidence: np.ndarray
    distance: np.ndarray  # to the person's centre (nan: confirmed or unknown)


@dataclass
class People:
    """Every named person's confirmed faces as running sums, one per mode (a person the user
    merged from far-apart clusters, a child at 2 and at 12, has several centres): the gallery."""

    names: list[str]  # sorted
    owner: np.ndarray  # person index of each mode
    sums: np.ndarray  # (modes, the model's dimension)
    counts: np.ndarray  # confirmed faces per mode

    @property
    def centres(self) -> np.ndarray:
        norms = np.linalg.norm(self.sums, axis=1, keepdims=True)
        return self.sums / np.maximum(norms, 1e-12)

    def distances(self, x: np.ndarray) -> np.ndarray:
        """(faces, people) distance from each face to each person: to their nearest centre."""
        by_mode = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (np.asarray(x, np.float64) @ self.centres.T)))
        out = np.full((len(x), len(self.names)), np.inf)
        np.minimum.at(out.T, self.owner, by_mode.T)
        return out

    def faces_of(self, name: str) -> int:
        return int(self.counts[self.owner == self.names.index(name)].sum())


def gallery(names: list[str | None], modes: list[int], x: np.ndarray) -> People:
    """People from (name or None, mode, embedding) rows; faces in no mode share one per person."""
    people = sorted({n for n in names if n})
    index = {n: i for i, n in enumerate(people)}
    keys = sorted({(index[n], m) for n, m in zip(names, modes) if n})
    slot = {k: i for i, k in enumerate(keys)}
    sums = np.zeros((len(keys), x.shape[1] if x.ndim == 2 else 0), np.float64)
    counts = np.zeros(len(keys), np.int64)
    rows = [i for i, n in enumerate(names) if n]
    if rows:
        where = np.array([slot[(index[names[i]], modes[i])] for i in rows])
        np.add.at(sums, where, x[rows])
        np.add.at(counts, where, 1)
    return People(people, np.array([k[0] for k in keys], np.int64), sums, counts)


@dataclass
class LiveFaces:
    """The live faces' ids, photos and embeddings, read once: labels change far more often than
    faces (the review server keeps this between clicks)."""

    face_ids: list[str]
    photo_ids: list[str]
    x: np.ndarray
    quality: np.ndarray  # models.quality: a face below MIN_QUALITY is never named automatically

    @staticmethod
    def read(library: Library) -> LiveFaces:
        return LiveFaces.of(library, library.read_faces(["face_id", "photo_id", "embedding", "quality"]))

    @staticmethod
    def of(library: Library, faces: pa.Table) -> LiveFaces:
        """From a faces table already read (with face_id, photo_id, embedding and quality)."""
        return LiveFaces(faces["face_id"].to_pylist(), faces["photo_id"].to_pylist(), face_embeddings(library, faces),
                         np.asarray(faces["quality"].to_numpy(), np.float32))


def face_tags(
    library: Library, min_confidence: float = NAME_CONFIDENCE, view: View | None = None, live: LiveFaces | None = None
) -> FaceTags:
    """confirmed / suggested / unknown for every live face, from the tables alone."""
    library.require()
    live = LiveFaces.read(library) if live is None else live
    face_ids, photo_ids, x = live.face_ids, live.photo_ids, live.x
    view = build_view(library) if view is None else view
    cluster_of = view.cluster_of()
    cluster_ids = np.array([cluster_of.get(f, UNCLUSTERED) for f in face_ids], np.int64)
    n = len(face_ids)
    person: list[str | None] = [None] * n
    status = [STATUS_UNKNOWN] * n
    conf = np.zeros(n, np.float32)
    distance = np.full(n, np.nan, np.float32)
    for i, (face_id, c) in enumerate(zip(face_ids, cluster_ids.tolist())):
        name = view.confirmed_name(face_id, c)
        if name:
            person[i], status[i], conf[i] = name, STATUS_CONFIRMED, 1.0
    mode_of = view.mode_of()
    people = gallery(person, [mode_of.get(f, UNCLUSTERED) for f in face_ids], x)
    open_rows = [
        i for i in range(n)
        if status[i] == STATUS_UNKNOWN and live.quality[i] >= MIN_QUALITY
        and not (cluster_ids[i] in view.clusters and view.clusters[cluster_ids[i]].ignored)
    ]
    if people.names and open_rows:
        candidates = _candidates(x, open_rows, people, face_ids, view, min_confidence)
        _assign(candidates, photo_ids, person, status, conf, distance, min_confidence, view.scale)
    return FaceTags(face_ids, photo_ids, cluster_ids, person, status, conf, distance)


def _candidates(
    x: np.ndarray, rows: list[int], people: People, face_ids: list[str], view: View, min_confidence: float
) -> list[tuple[float, int, str]]:
    """(distance, face row, name) of each open face's nearest allowed people within the cut.

    Only pairs within the cut become Python objects: most faces of a big library are strangers
    or unnamed people, far from everyone named.
    """
    cut = view.scale.cut_distance(min_confidence)
    out = []
    k = min(CANDIDATES, len(people.names))
    nots = view.labels.nots
    for start in range(0, len(rows), BLOCK):
        block = np.asarray(rows[start:start + BLOCK])
        d = people.distances(x[block])
        nearest = np.argsort(d, axis=1)[:, : k + 4]  # a few spare for "not" labels
        near = np.take_along_axis(d, nearest, axis=1)
        for r, c in zip(*np.nonzero(near <= cut)):
            i, j = int(block[r]), int(nearest[r, c])
            if people.names[j] not in nots.get(face_ids[i], ()):
                out.append((float(near[r, c]), i, people.names[j]))
    return out


def _assign(
    candidates: list[tuple[float, int, str]],
    photo_ids: list[str],
    person: list[str | None],
    status: list[str],
    conf: np.ndarray,
    distance: np.ndarray,
    min_confidence: float,
    scale: DistanceScale,
) -> None:
    """Best (face, person) pairs first; a photo holds each name once (confirmed faces first)."""
    used = {(photo_ids[i], name) for i, name in enumerate(person) if name}
    for d, i, name in sorted(candidates):
        c = float(scale.confidence(d))
        if c < min_confidence:
            break
        if status[i] != STATUS_UNKNOWN or (photo_ids[i], name) in used:
            continue
        person[i], status[i], conf[i], distance[i] = name, STATUS_SUGGESTED, c, d
        used.add((photo_ids[i], name))


@dataclass
class Person:
    name: str
    confirmed: int
    suggested: int
    photos: int  # photos with a confirmed or suggested face of this person
    clusters: list[int]


def people_summary(tags: FaceTags) -> list[Person]:
    by_name: dict[str, Person] = {}
    photos: dict[str, set[str]] = {}
    for name, st, photo, c in zip(tags.person, tags.status, tags.photo_ids, tags.cluster_ids.tolist()):
        if name is None:
            continue
        entry = by_name.setdefault(name, Person(name, 0, 0, 0, []))
        if st == STATUS_CONFIRMED:
            entry.confirmed += 1
        else:
            entry.suggested += 1
        photos.setdefault(name, set()).add(photo)
        if c != UNCLUSTERED and c not in entry.clusters:
            entry.clusters.append(c)
    for name, entry in by_name.items():
        entry.photos = len(photos[name])
        entry.clusters.sort()
    return sorted(by_name.values(), key=lambda p: (-(p.confirmed + p.suggested), p.name))


def named_gallery(library: Library, view: View | None = None) -> People:
    """The named people's confirmed faces: what `identify` compares new faces with."""
    library.require()
    view = build_view(library, library.read_clusters()) if view is None else view
    faces = library.read_faces(["face_id", "embedding"])
    cluster_of, mode_of = view.cluster_of(), view.mode_of()
    face_ids = faces["face_id"].to_pylist()
    names = [view.confirmed_name(f, cluster_of.get(f, UNCLUSTERED)) for f in face_ids]
    return gallery(names, [mode_of.get(f, UNCLUSTERED) for f in face_ids], face_embeddings(library, faces))
