"""One shard on one worker: read, hash, then the face pipeline (models.faces); every photo becomes a row.

Workers receive a small picklable `PipelineBuilder` with each task and build the face pipeline
from it once per process (models.faces.pipeline_for).

`reembed_shard` is the other task: faces already in the library embedded again from their stored
boxes and landmarks (no detection), when a library moves to another model, runtime or precision.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from facebatch.errors import PhotoError
from facebatch.imageload import DecodedPhoto, decode_photo, read_photo_bytes
from facebatch.models.detection import Face
from facebatch.models.embedding import FaceGeometry
from facebatch.models.faces import Crops, FacePipeline, PipelineBuilder, StageClock, pipeline_for
from facebatch.scan.discovery import PhotoFile
from facebatch.scan.video import video_people
from facebatch.videoload import FRAME_GAP, VIDEO_EXTENSIONS, frame_at, sample_frames, video_id
from facebatch.schema import (
    FACES_SCHEMA,
    KIND_PHOTO,
    KIND_VIDEO,
    PHOTOS_SCHEMA,
    STATUS_ERROR,
    STATUS_NO_FACES,
    STATUS_OK,
    embedding_column,
)

STAGES = ("read", "decode", "detect", "crop", "embed")


@dataclass
class ShardResult:
    photos: pa.Table  # one row per photo that needed model work or failed
    faces: pa.Table
    reused: list[tuple[PhotoFile, str]]  # known content (moved or touched file): no model work
    stage_seconds: dict[str, float]
    errors: dict[str, int]


@dataclass(frozen=True)
class ForgottenFace:
    """A face the user had forgotten (`facebatch forget`): found again within IoU 0.5 of its box
    (detection settings move boxes a little), in a video while it was seen, it is not embedded."""

    box: tuple[float, ...]
    video_span: tuple[float, ...] | None = None

    def is_found_again(self, box: Sequence[float], video_time: float | None = None) -> bool:
        if iou(box, self.box) < 0.5:
            return False
        if self.video_span is None or video_time is None:
            return True
        return self.video_span[0] - FRAME_GAP <= video_time <= self.video_span[1] + FRAME_GAP


# The forgotten faces by photo id and by path (an edited photo keeps its path, not its id).
Forgotten = Mapping[str, Sequence[ForgottenFace]]


def run_shard(builder: PipelineBuilder, files: Sequence[PhotoFile], known_ids: frozenset[str],
              forgotten: Forgotten | None = None) -> ShardResult:
    """The Dask task. One shard at a time per process: the models already use the worker's cores."""
    pipeline = pipeline_for(builder)
    with pipeline.lock:
        return process_shard(pipeline, files, known_ids, forgotten or {})


@dataclass(frozen=True)
class KnownPhoto:
    """A photo whose faces are in the library: embedded again from these boxes, no detection."""

    path: str
    photo_id: str
    face_ids: tuple[str, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    landmarks: tuple[tuple[float, ...], ...]
    rotations: tuple[int, ...]
    times: tuple[float | None, ...] = ()  # a video's faces: the frame each was found in


@dataclass
class ReembedResult:
    face_ids: list[str]
    embeddings: np.ndarray  # (len(face_ids), the model's dimension)
    skipped: dict[str, str]  # path -> why its faces were left as they were (changed, unreadable)
    stage_seconds: dict[str, float]


def reembed_shard(builder: PipelineBuilder, photos: Sequence[KnownPhoto]) -> ReembedResult:
    """The Dask task of a re-embed: each photo read, checked against its id, decoded as the scan
    decodes it, and its known faces cropped and embedded with this builder's model."""
    pipeline = pipeline_for(builder)
    with pipeline.lock:
        return reembed_photos(pipeline, photos)


@dataclass
class _ShardRows:
    photos: list[dict] = field(default_factory=list)
    faces: list[dict] = field(default_factory=list)  # photos' faces, to embed from `crops`
    crops: list[Crops] = field(default_factory=list)
    video_faces: list[dict] = field(default_factory=list)  # videos' people, embedded already
    reused: list[tuple[PhotoFile, str]] = field(default_factory=list)
    seconds: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)


def process_shard(pipeline: FacePipeline, files: Sequence[PhotoFile], known_ids: frozenset[str] = frozenset(),
                  forgotten: Forgotten | None = None) -> ShardResult:
    rows = _ShardRows()
    for file in files:
        is_video = os.path.splitext(file.path)[1].lower() in VIDEO_EXTENSIONS
        (_process_video if is_video else _process_photo)(pipeline, file, known_ids, rows, forgotten or {})
    with StageClock(rows.seconds)("embed"):
        embeddings = pipeline.embed(rows.crops)
    for face, embedding in zip(rows.faces, embeddings):
        face["embedding"] = embedding
    return ShardResult(
        photos=pa.Table.from_pylist(rows.photos, PHOTOS_SCHEMA),
        faces=_faces_table(rows.faces + rows.video_faces),
        reused=rows.reused,
        stage_seconds={stage: rows.seconds[stage] for stage in STAGES},
        errors=dict(rows.errors),
    )


def reembed_photos(pipeline: FacePipeline, photos: Sequence[KnownPhoto]) -> ReembedResult:
    seconds: Counter = Counter()
    clock = StageClock(seconds)
    face_ids: list[str] = []
    crops: list[Crops] = []
    skipped: dict[str, str] = {}
    for known in photos:
        try:
            faces = [FaceGeometry(box, points, turn) for box, points, turn in zip(known.boxes, known.landmarks, known.rotations)]
            if any(t is not None for t in known.times):
                crops += _video_crops(pipeline, known, faces, clock)
                face_ids += known.face_ids
                continue
            with clock("read"):
                data = read_photo_bytes(known.path)
            if photo_id_of(data) != known.photo_id:
                skipped[known.path] = "changed since it was scanned"
                continue
            with clock("decode"):
                photo = decode_photo(data, min_long_side=pipeline.detector.settings.max_side)
            with clock("crop"):
                crops += pipeline.crops_of(data, photo, faces)
        except PhotoError as exc:
            skipped[known.path] = exc.message
            continue
        except Exception as exc:  # noqa: BLE001 - one bad photo must never end the re-embed
            skipped[known.path] = f"{type(exc).__name__}: {exc}"
            continue
        face_ids += known.face_ids
    with clock("embed"):
        embeddings = pipeline.embed(crops)
    return ReembedResult(face_ids, embeddings, skipped, {stage: seconds[stage] for stage in STAGES})


def _video_crops(pipeline: FacePipeline, known: KnownPhoto, faces: list[FaceGeometry], clock: StageClock) -> list[Crops]:
    """A video's faces cropped again from the frames they were found in."""
    with clock("read"):
        if video_id(known.path) != known.photo_id:
            raise PhotoError("unreadable", "changed since it was scanned")
    crops = []
    for face, time in zip(faces, known.times):
        with clock("decode"):
            frame = frame_at(known.path, time or 0.0)
        with clock("crop"):
            crops.append(pipeline.embedder.crops(DecodedPhoto(frame, frame.width, frame.height), face))
    return crops


def _process_photo(pipeline: FacePipeline, file: PhotoFile, known_ids: frozenset[str], rows: _ShardRows,
                   forgotten: Forgotten) -> None:
    photo_id = None
    try:
        with StageClock(rows.seconds)("read"):
            data = read_photo_bytes(file.path)
            photo_id = photo_id_of(data)
        if photo_id in known_ids:
            rows.reused.append((file, photo_id))
            return
        try:
            photo, faces, crops = pipeline.find_faces(data, rows.seconds)
        except PhotoError:
            if file.rendition is None:
                raise
            # A RAW LibRaw can't read (a camera newer than it): the camera's JPEG of it instead.
            photo, faces, crops = pipeline.find_faces(read_photo_bytes(file.rendition), rows.seconds)
        gone = [*forgotten.get(photo_id, ()), *forgotten.get(file.path, ())]
        kept = [i for i, face in enumerate(faces) if not any(f.is_found_again(face.box) for f in gone)]
    except Exception as exc:  # noqa: BLE001 - one bad photo must never end the scan
        _failed(file, photo_id, exc, rows)
        return
    rows.photos.append(photo_row(file, photo_id, photo=photo, n_faces=len(kept)))
    for index, i in enumerate(kept):
        rows.faces.append(_face_row(photo_id, file.path, index, faces[i], pipeline.model))
        rows.crops.append(crops[i])


def _process_video(pipeline: FacePipeline, file: PhotoFile, known_ids: frozenset[str], rows: _ShardRows,
                   forgotten: Forgotten) -> None:
    """A video: its keyframes detected and embedded, its faces one row per person (scan.video)."""
    photo_id = None
    try:
        with StageClock(rows.seconds)("read"):
            photo_id = video_id(file.path)
        if photo_id in known_ids:
            rows.reused.append((file, photo_id))
            return
        with StageClock(rows.seconds)("decode"):
            video = sample_frames(file.path)
        gone = [*forgotten.get(photo_id, ()), *forgotten.get(file.path, ())]
        people = [p for p in video_people(pipeline, video, rows.seconds)
                  if not any(f.is_found_again(p.best.face.box, p.best.time) for f in gone)]
    except Exception as exc:  # noqa: BLE001 - one bad video must never end the scan
        _failed(file, photo_id, exc, rows)
        return
    rows.photos.append(photo_row(file, photo_id, photo=video, n_faces=len(people), kind=KIND_VIDEO,
                                 duration=video.duration))
    for index, person in enumerate(people):
        row = _face_row(photo_id, file.path, index, person.best.face, pipeline.model, person.best.time)
        row.update(embedding=person.best.embedding, video_span=[person.first, person.last])
        rows.video_faces.append(row)


def _failed(file: PhotoFile, photo_id: str | None, exc: Exception, rows: _ShardRows) -> None:
    error = exc if isinstance(exc, PhotoError) else PhotoError("internal", f"{type(exc).__name__}: {exc}")
    rows.errors[error.kind] += 1
    rows.photos.append(photo_row(file, photo_id, error=error))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def photo_id_of(data: bytes) -> str:
    """A photo's id: the hash of its bytes (the same file anywhere is the same photo)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def face_id(photo_id: str, box: Sequence[float]) -> str:
    """Content hash + rounded box: the same face of the same file gets the same id on every scan."""
    key = f"{photo_id}:" + ",".join(str(round(v)) for v in box)
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def photo_row(
    file: PhotoFile,
    photo_id: str | None,
    photo: Any = None,
    n_faces: int = 0,
    error: PhotoError | None = None,
    kind: str = KIND_PHOTO,
    duration: float | None = None,
) -> dict:
    status = STATUS_ERROR if error else (STATUS_OK if n_faces else STATUS_NO_FACES)
    return {
        "photo_id": photo_id,
        "path": file.path,
        "size_bytes": file.size_bytes,
        "mtime": file.mtime_ns,
        "width": photo.width if photo else None,
        "height": photo.height if photo else None,
        "n_faces": n_faces,
        "status": status,
        "error_kind": error.kind if error else None,
        "error": error.message if error else None,
        "scanned_at": datetime.now(timezone.utc),
        "kind": kind,
        "duration": duration,
    }


def _face_row(photo_id: str, path: str, index: int, face: Face, model: str, video_time: float | None = None) -> dict:
    return {
        # A video's face is keyed by its frame too: two people may sit in one place at two times.
        "face_id": face_id(photo_id if video_time is None else f"{photo_id}@{video_time:.3f}", face.box),
        "photo_id": photo_id,
        "path": path,
        "face_index": index,
        "box": list(face.box),
        "score": face.score,
        "landmarks": list(face.landmarks),
        "model": model,
        "rotation": face.rotation or None,
        "video_time": video_time,
        "video_span": None,
    }


def _faces_table(rows: list[dict]) -> pa.Table:
    if not rows:
        return FACES_SCHEMA.empty_table()
    columns = {name: [r[name] for r in rows] for name in FACES_SCHEMA.names if name not in ("embedding", "quality")}
    columns["embedding"] = embedding_column(np.stack([r["embedding"] for r in rows]))
    columns["quality"] = [None] * len(rows)  # Library.write_shard computes it
    return pa.table({name: columns[name] for name in FACES_SCHEMA.names}).cast(FACES_SCHEMA)

