"""Per-photo tags from the tables (no photo is opened): json, jsonl or parquet, to a file
(written atomically, see facebatch.files) or to standard output ("-").

json: {"photos": [{path, photo_id, kind (photo | video), width, height, faces: [...]}, ...]};
jsonl: one such photo per line; parquet: one row per face with the photo's columns repeated. A
face is {face_id, box: [x1, y1, x2, y2] pixels, box_relative: the same / width, height, person,
status (confirmed | suggested | unknown), confidence, cluster_id (null when unclustered),
video_time and video_span (a video's face: the frame it is seen best in, and the first and last
it is seen in, in seconds; null for photos)}.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from facebatch.errors import UsageError
from facebatch.files import STDOUT, describe_output, output_file
from facebatch.models.scale import NAME_CONFIDENCE
from facebatch.exports.tagged import tagged_faces
from facebatch.schema import KIND_PHOTO, LIVE_STATUSES
from facebatch.store import Library

FORMATS = ("json", "jsonl", "parquet")

EXPORT_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),
        pa.field("photo_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("face_id", pa.string()),
        pa.field("box", pa.list_(pa.float32(), 4)),
        pa.field("box_relative", pa.list_(pa.float32(), 4)),
        pa.field("person", pa.string()),
        pa.field("status", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("cluster_id", pa.int64()),
        pa.field("video_time", pa.float32()),
        pa.field("video_span", pa.list_(pa.float32(), 2)),
    ]
)


@dataclass(frozen=True)
class ExportSettings:
    output: str  # a file name, or "-" for standard output
    format: str = "json"
    only_named: bool = False
    min_confidence: float = NAME_CONFIDENCE  # suggestions below this are exported as unknown

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"--format must be json, jsonl or parquet, got {self.format!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UsageError(f"--min-confidence must be between 0 and 1, got {self.min_confidence}")


def format_for(output: str, given: str | None) -> str:
    """--format, else the file's extension; an unknown extension needs --format."""
    if given:
        return given
    if output == STDOUT:
        return "jsonl"
    suffix = Path(output).suffix.lstrip(".").lower()
    if suffix in FORMATS:
        return suffix
    raise UsageError(f"cannot tell the format of {output!r} from its extension: name it .json, .jsonl or .parquet, "
                     "or give --format")


@dataclass
class ExportSummary:
    photos: int
    faces: int
    named: int

    def line(self, output: str) -> str:
        return f"{self.photos} photos, {self.faces} faces ({self.named} with a person) -> {describe_output(output)}"


def _round(values: list[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def live_photo_rows(library: Library) -> list[tuple[str, str, int, int, str]]:
    """(path, photo_id, width, height, kind) of each live photo or video, sorted by path, one row per path."""
    photos = library.read_table("photos", ["path", "photo_id", "width", "height", "status", "kind"])
    rows, seen = [], set()
    for path, photo_id, width, height, status, kind in sorted(zip(*(c.to_pylist() for c in photos.columns)),
                                                              key=lambda row: row[0]):
        if status in LIVE_STATUSES and path not in seen:
            seen.add(path)
            rows.append((path, photo_id, width, height, kind or KIND_PHOTO))
    return rows


def photo_records(library: Library, settings: ExportSettings) -> list[dict[str, Any]]:
    """Live photos with their faces, sorted by path; filters applied."""
    by_photo: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for face in tagged_faces(library, settings.min_confidence):
        if settings.only_named and face.person is None:
            continue
        by_photo[face.photo_id].append({"face_id": face.face_id, "box": face.box, "person": face.person,
                                        "status": face.status, "confidence": face.confidence,
                                        "cluster_id": face.cluster_id, "video_time": face.video_time,
                                        "video_span": face.video_span})
    records = []
    for path, photo_id, width, height, kind in live_photo_rows(library):
        photo_faces = by_photo.get(photo_id, [])
        if settings.only_named and not photo_faces:
            continue
        out = []
        for face in sorted(photo_faces, key=lambda f: f["box"][0]):
            box = face["box"]
            relative = [box[0] / width, box[1] / height, box[2] / width, box[3] / height] if width and height else None
            out.append({**face, "box": _round(box), "box_relative": _round(relative) if relative else None})
        records.append({"path": path, "photo_id": photo_id, "kind": kind, "width": width, "height": height, "faces": out})
    return records


def _json_lines(records: list[dict[str, Any]]) -> Iterator[str]:
    for record in records:
        yield json.dumps(record, ensure_ascii=False) + "\n"


def _json_document(records: list[dict[str, Any]]) -> Iterator[str]:
    yield '{"photos": ['
    for i, record in enumerate(records):
        yield ("\n" if i == 0 else ",\n") + json.dumps(record, ensure_ascii=False)
    yield "\n]}\n"


def _face_table(records: list[dict[str, Any]]) -> pa.Table:
    rows = [
        {"path": r["path"], "photo_id": r["photo_id"], "kind": r["kind"], "width": r["width"], "height": r["height"], **face}
        for r in records
        for face in r["faces"]
    ]
    return pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA)


def export_tags(library: Library, settings: ExportSettings) -> ExportSummary:
    records = photo_records(library, settings)
    binary = settings.format == "parquet"
    with output_file(settings.output, binary=binary) as f:
        if settings.format == "json":
            f.writelines(_json_document(records))
        elif settings.format == "jsonl":
            f.writelines(_json_lines(records))
        else:
            pq.write_table(_face_table(records), f, compression="zstd")
    # Distinct faces: a copied photo lists its faces under each of its paths, as each file has them,
    # but they are the same faces `cluster` counts.
    faces = {f["face_id"]: f["person"] for r in records for f in r["faces"]}
    return ExportSummary(len(records), len(faces), sum(1 for person in faces.values() if person is not None))


