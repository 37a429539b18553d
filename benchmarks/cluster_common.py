"""Shared by the cluster benchmarks: a library's faces with their true identity.

Truth comes from a dataset's manifest.csv (path, identity). A photo whose manifest row names one
person may hold more faces (LFW photos often show someone in the background): the face nearest the
photo's centre, for LFW, or the biggest, otherwise, is that person; every other face gets an
identity of its own ("stranger"), so clustering it with the person counts as a mistake.
Group photos (identity `a;b`) are left out of the truth: their faces are clustered but not scored.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebatch.people.clustering import box_sides
from facebatch.people.embeddings import embeddings_matrix
from facebatch.people.evaluation import nearest_centre
from facebatch.store import Library

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@dataclass
class Faces:
    face_ids: list[str]
    embeddings: np.ndarray  # (n, 512)
    truth: list[str | None]  # None: not scored (group photo or not in the manifest)
    subject: np.ndarray  # bool: the manifest's person (not a stranger face)
    sides: np.ndarray  # shorter side of each face's box, pixels


def manifest(dataset: Path) -> dict[str, str]:
    images = dataset / "images" if (dataset / "images").is_dir() else dataset
    with open(dataset / "manifest.csv", newline="") as f:
        return {str((images / row["path"]).resolve()): row["identity"] for row in csv.DictReader(f)}


def library_faces(library: Library, dataset: Path, central: bool) -> Faces:
    faces = library.read_faces(["face_id", "photo_id", "path", "box", "embedding"])
    photos = library.read_photos()
    size = {p: (w, h) for p, w, h in zip(photos["photo_id"].to_pylist(), photos["width"].to_pylist(),
                                          photos["height"].to_pylist())}
    identity = manifest(dataset)
    face_ids = faces["face_id"].to_pylist()
    boxes = np.array(faces["box"].to_pylist(), np.float64)
    photo_ids = faces["photo_id"].to_pylist()
    paths = [str(Path(p).resolve()) for p in faces["path"].to_pylist()]
    # The person of each photo: one face per photo, by distance to the centre or by size.
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i, photo in enumerate(photo_ids):
        rows_of[photo].append(i)
    subject_rows = set()
    for photo, rows in rows_of.items():
        b = boxes[rows]
        areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        subject_rows.add(rows[nearest_centre(b, *size[photo]) if central else int(np.argmax(areas))])
    truth: list[str | None] = []
    subject = np.zeros(len(face_ids), bool)
    for i, (face_id, path) in enumerate(zip(face_ids, paths)):
        person = identity.get(path)
        if person is None or ";" in person:
            truth.append(None)
        elif i in subject_rows:
            truth.append(person)
            subject[i] = True
        else:
            truth.append(f"stranger:{face_id}")
    return Faces(face_ids, embeddings_matrix(faces), truth, subject, box_sides(faces))
