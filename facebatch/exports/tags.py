"""Per-photo tags from the tables (no photo is opened): json, jsonl or parquet, written atomically.

json: {"photos": [{path, photo_id, width, height, faces: [...]}, ...]}; jsonl: one such photo per
line; parquet: one row per face with the photo's columns repeated. A face is
{face_id, box: [x1, y1, x2, y2] pixels, box_relative: the same / width, height, person, status
(confirmed | suggested | unknown), confidence, cluster_id (null when unclustered)}.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from facebatch.errors import FacebatchError
from facebatch.people.labels import DEFAULT_SUGGEST_DISTANCE, STATUS_UNKNOWN, face_tags
from facebatch.schema import LIVE_STATUSES
from facebatch.store import Library, atomic_file, atomic_write_table

FORMATS = ("json", "jsonl", "parquet")

EXPORT_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("photo_id", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("face_id", pa.string()),
        pa.field("box", pa.list_(pa.float32(), 4)),
        pa.field("box_relative", pa.list_(pa.float32(), 4)),
        pa.field("person", pa.string()),
        pa.field("status", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("cluster_id", pa.int64()),
    ]
)


@dataclass(frozen=True)
class ExportSettings:
    output: Path
    format: str = "json"
    only_named: bool = False
    min_confidence: float = 0.0
    suggest_distance: float = DEFAULT_SUGGEST_DISTANCE

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise FacebatchError(f"--format must be json, jsonl or parquet, got {self.format!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise FacebatchError(f"--min-confidence must be between 0 and 1, got {self.min_confidence}")
        if not 0.0 < self.suggest_distance <= 2.0:
            raise FacebatchError(f"--suggest-distance must be in (0, 2], got {self.suggest_distance}")
        if self.output.is_dir():
            raise FacebatchError(f"{self.output} is a folder: give a file name, e.g. tags.{self.format}")


@dataclass
class ExportSummary:
    photos: int
    faces: int
    named: int

    def line(self, output: Path) -> str:
        return f"{self.photos} photos, {self.faces} faces ({self.named} with a person) -> {output}"


def _round(values: list[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def photo_records(library: Library, settings: ExportSettings) -> list[dict[str, Any]]:
    """Live photos with their faces, sorted by path; filters applied."""
    tags = face_tags(library, settings.suggest_distance)
    faces = library.read_faces(["face_id", "photo_id", "box"])
    boxes = dict(zip(faces["face_id"].to_pylist(), faces["box"].to_pylist()))
    photos = library.read_photos()
    by_photo: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for face_id, photo_id, c, person, status, conf in zip(
        tags.face_ids, tags.photo_ids, tags.cluster_ids.tolist(), tags.person, tags.status, tags.confidence.tolist()
    ):
        if status != "confirmed" and person is not None and conf < settings.min_confidence:
            person, status, conf = None, STATUS_UNKNOWN, 0.0  # a weak suggestion is no suggestion
        if person is None:
            conf = 0.0
        if settings.only_named and person is None:
            continue
        by_photo[photo_id].append(
            {"face_id": face_id, "box": boxes[face_id], "person": person, "status": status,
             "confidence": round(float(conf), 4), "cluster_id": None if c < 0 else int(c)}
        )
    records = []
    seen: set[str] = set()
    columns = [photos[c].to_pylist() for c in ("path", "photo_id", "width", "height", "status")]
    for path, photo_id, width, height, status in sorted(zip(*columns), key=lambda r: r[0]):
        if status not in LIVE_STATUSES or path in seen:
            continue
        seen.add(path)
        photo_faces = by_photo.get(photo_id, [])
        if settings.only_named and not photo_faces:
            continue
        out = []
        for face in sorted(photo_faces, key=lambda f: f["box"][0]):
            box = face["box"]
            relative = [box[0] / width, box[1] / height, box[2] / width, box[3] / height] if width and height else None
            out.append({**face, "box": _round(box), "box_relative": _round(relative) if relative else None})
        records.append({"path": path, "photo_id": photo_id, "width": width, "height": height, "faces": out})
    return records


def _json_lines(records: list[dict[str, Any]]) -> Iterator[str]:
    for record in records:
        yield json.dumps(record, ensure_ascii=False) + "\n"


def _write_text(path: Path, chunks: Iterator[str]) -> None:
    """Streamed to a temp file, then renamed: a kill leaves the old file or none."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.writelines(chunks)


def _json_document(records: list[dict[str, Any]]) -> Iterator[str]:
    yield '{"photos": ['
    for i, record in enumerate(records):
        yield ("\n" if i == 0 else ",\n") + json.dumps(record, ensure_ascii=False)
    yield "\n]}\n"


def _face_table(records: list[dict[str, Any]]) -> pa.Table:
    rows = [
        {"path": r["path"], "photo_id": r["photo_id"], "width": r["width"], "height": r["height"], **face}
        for r in records
        for face in r["faces"]
    ]
    return pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA)


def export_tags(library: Library, settings: ExportSettings) -> ExportSummary:
    records = photo_records(library, settings)
    try:
        if settings.format == "json":
            _write_text(settings.output, _json_document(records))
        elif settings.format == "jsonl":
            _write_text(settings.output, _json_lines(records))
        else:
            atomic_write_table(settings.output, _face_table(records))
    except OSError as exc:
        raise FacebatchError(f"cannot write {settings.output}: {exc.strerror or exc}") from exc
    n_faces = sum(len(r["faces"]) for r in records)
    named = sum(1 for r in records for f in r["faces"] if f["person"] is not None)
    return ExportSummary(len(records), n_faces, named)


