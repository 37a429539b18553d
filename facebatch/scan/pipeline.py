"""One shard on one worker: read, hash, decode, detect, crop, embed; every photo becomes a row.

Workers receive a small picklable `PipelineBuilder` with each task and build the heavy models
from it once per process (cached), never a pickled model per task. In ONNX Runtime (the default)
a worker never imports torch; `--runtime torch` (and `--device cuda`) builds the torch modules.

`reembed_shard` is the other task: faces already in the library embedded again from the same
boxes and crops (no detection), when a library moves to another runtime or precision.
"""

from __future__ import annotations

import gc
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from facebatch.config import DetectionSettings, ModelSettings
from facebatch.models.detection import Face, FaceDetector
from facebatch.models.onnx_models import OnnxModels, OnnxMtcnnNets, prepare_onnx_models
from facebatch.scan.discovery import PhotoFile
from facebatch.models.embedding import (INPUT_SIZE, Embedder, FaceEmbedder, OnnxFaceEmbedder, face_crop,
                                        needed_long_side)
from facebatch.errors import FacebatchError, PhotoError
from facebatch.imageload import DecodedPhoto, decode_photo, read_photo_bytes
from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA, STATUS_ERROR, STATUS_NO_FACES, STATUS_OK
from facebatch.models.weights import Weights

STAGES = ("read", "decode", "detect", "crop", "embed")


@dataclass(frozen=True)
class PipelineBuilder:
    """Everything a worker needs to build the pipeline; hashable, so built pipelines are cached."""

    detection: DetectionSettings
    weights: Weights
    batch_size: int = 32
    device: str = "cpu"
    torch_threads: int | None = None  # threads of the models (torch or ONNX Runtime); None: the Dask worker's
    models: ModelSettings = ModelSettings("torch", "fp32")
    onnx: OnnxModels | None = None  # the files of `models` when it runs in ONNX Runtime (prepare_builder)

    def build(self) -> FacePipeline:
        threads = self.torch_threads or _worker_threads()
        if self.models.runtime == "torch":
            import torch

            from facebatch.models.mtcnn import TorchMtcnnNets

            torch.set_num_threads(threads)
            pipeline = FacePipeline(
                FaceDetector(self.detection, TorchMtcnnNets(self.device)),
                FaceEmbedder(self.weights, self.device, self.batch_size),
            )
        else:
            if self.onnx is None:
                raise FacebatchError("the ONNX models were not prepared: build the pipeline with prepare_builder()")
            pipeline = FacePipeline(
                FaceDetector(self.detection, OnnxMtcnnNets(self.onnx, threads)),
                OnnxFaceEmbedder(self.weights, self.onnx.facenet, self.models.precision, threads, self.batch_size),
            )
        # The models (and torch's modules, when loaded) live as long as the process: keep the garbage
        # collector from walking them on every full collection and at exit (a worker stops ~0.7 s sooner).
        gc.freeze()
        return pipeline


def prepare_builder(
    detection: DetectionSettings,
    weights: Weights,
    models: ModelSettings,
    batch_size: int = 32,
    device: str = "cpu",
    threads: int | None = None,
) -> PipelineBuilder:
    """A builder for `models`; for ONNX Runtime its files are made here, once (that needs torch),
    so that workers only read them."""
    onnx = prepare_onnx_models(weights, models.precision) if models.runtime == "onnx" else None
    return PipelineBuilder(detection, weights, batch_size, device, threads, models, onnx)


def _worker_threads() -> int:
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ImportError, ValueError):
        return 1


_PIPELINES: dict[PipelineBuilder, FacePipeline] = {}
_PIPELINES_LOCK = threading.Lock()


def pipeline_for(builder: PipelineBuilder) -> FacePipeline:
    """This process's pipeline for `builder`, built on first use (one model copy per worker)."""
    with _PIPELINES_LOCK:
        if builder not in _PIPELINES:
            _PIPELINES.clear()  # a new scan's settings replace the old models, not add to them
            gc.unfreeze()  # and the garbage collector may look at the old ones again (see build)
            _PIPELINES[builder] = builder.build()
        return _PIPELINES[builder]


@dataclass
class ShardResult:
    photos: pa.Table  # one row per photo that needed model work or failed
    faces: pa.Table
    reused: list[tuple[PhotoFile, str]]  # known content (moved or touched file): no model work
    stage_seconds: dict[str, float]
    errors: dict[str, int]


def run_shard(builder: PipelineBuilder, files: Sequence[PhotoFile], known_ids: frozenset[str]) -> ShardResult:
    """The Dask task. One shard at a time per process: torch already uses the worker's cores."""
    pipeline = pipeline_for(builder)
    with pipeline.lock:
        return pipeline.process(files, known_ids)


@dataclass(frozen=True)
class KnownPhoto:
    """A photo whose faces are in the library: embedded again from these boxes, no detection."""

    path: str
    photo_id: str
    face_ids: tuple[str, ...]
    boxes: tuple[tuple[float, float, float, float], ...]


@dataclass
class ReembedResult:
    face_ids: list[str]
    embeddings: np.ndarray  # (len(face_ids), 512)
    skipped: dict[str, str]  # path -> why its faces were left as they were (changed, unreadable)
    stage_seconds: dict[str, float]


def reembed_shard(builder: PipelineBuilder, photos: Sequence[KnownPhoto]) -> ReembedResult:
    """The Dask task of a re-embed: each photo read, checked against its id, decoded as the scan
    decodes it, and its known boxes cropped and embedded with this builder's models."""
    pipeline = pipeline_for(builder)
    with pipeline.lock:
        return pipeline.reembed(photos)


@dataclass
class _ShardRows:
    photos: list[dict] = field(default_factory=list)
    faces: list[dict] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    reused: list[tuple[PhotoFile, str]] = field(default_factory=list)
    seconds: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)


class FacePipeline:
    def __init__(self, detector: FaceDetector, embedder: Embedder) -> None:
        self.detector = detector
        self.embedder = embedder
        self.lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.embedder.model_tag

    def process(self, files: Sequence[PhotoFile], known_ids: frozenset[str] = frozenset()) -> ShardResult:
        rows = _ShardRows()
        for file in files:
            self._process_photo(file, known_ids, rows)
        started = time.perf_counter()
        embeddings = self.embedder.embed(np.stack(rows.crops) if rows.crops else _no_crops())
        rows.seconds["embed"] += time.perf_counter() - started
        for face, embedding in zip(rows.faces, embeddings):
            face["embedding"] = embedding
        return ShardResult(
            photos=pa.Table.from_pylist(rows.photos, PHOTOS_SCHEMA),
            faces=_faces_table(rows.faces),
            reused=rows.reused,
            stage_seconds={stage: rows.seconds[stage] for stage in STAGES},
            errors=dict(rows.errors),
        )

    def reembed(self, photos: Sequence[KnownPhoto]) -> ReembedResult:
        seconds: Counter = Counter()
        clock = _StageClock(seconds)
        face_ids: list[str] = []
        crops: list[np.ndarray] = []
        skipped: dict[str, str] = {}
        for known in photos:
            try:
                with clock("read"):
                    data = read_photo_bytes(known.path)
                if photo_id_of(data) != known.photo_id:
                    skipped[known.path] = "changed since it was scanned"
                    continue
                with clock("decode"):
                    photo = decode_photo(data, min_long_side=self.detector.settings.max_side)
                with clock("crop"):
                    crops += crops_of(data, photo, known.boxes)
            except PhotoError as exc:
                skipped[known.path] = exc.message
                continue
            except Exception as exc:  # noqa: BLE001 - one bad photo must never end the re-embed
                skipped[known.path] = f"{type(exc).__name__}: {exc}"
                continue
            face_ids += known.face_ids
        with clock("embed"):
            embeddings = self.embedder.embed(np.stack(crops) if crops else _no_crops())
        return ReembedResult(face_ids, embeddings, skipped, {stage: seconds[stage] for stage in STAGES})

    def find_faces(
        self, data: bytes, seconds: Counter | None = None
    ) -> tuple[DecodedPhoto, list[Face], list[np.ndarray]]:
        return find_faces(self.detector, data, seconds)

    def _process_photo(self, file: PhotoFile, known_ids: frozenset[str], rows: _ShardRows) -> None:
        clock = _StageClock(rows.seconds)
        photo_id = None
        try:
            with clock("read"):
                data = read_photo_bytes(file.path)
                photo_id = photo_id_of(data)
            if photo_id in known_ids:
                rows.reused.append((file, photo_id))
                return
            photo, faces, crops = self.find_faces(data, rows.seconds)
        except PhotoError as exc:
            rows.errors[exc.kind] += 1
            rows.photos.append(photo_row(file, photo_id, error=exc))
            return
        except Exception as exc:  # noqa: BLE001 - one bad photo must never end the scan
            error = PhotoError("internal", f"{type(exc).__name__}: {exc}")
            rows.errors[error.kind] += 1
            rows.photos.append(photo_row(file, photo_id, error=error))
            return
        rows.photos.append(photo_row(file, photo_id, photo=photo, n_faces=len(faces)))
        for index, (face, crop) in enumerate(zip(faces, crops)):
            rows.faces.append(_face_row(photo_id, file.path, index, face, self.model))
            rows.crops.append(crop)


def crops_of(data: bytes, photo: DecodedPhoto, boxes: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Crops come from a decode large enough for every face (full size when a face is small)."""
    if not boxes:
        return []
    needed = needed_long_side(boxes, photo.width, photo.height)
    have = max(photo.image.size)
    if (needed is None and photo.scale < 1) or (needed is not None and have < needed):
        photo = decode_photo(data, min_long_side=needed)
    return [face_crop(photo, box) for box in boxes]


def find_faces(
    detector: FaceDetector, data: bytes, seconds: Counter | None = None
) -> tuple[DecodedPhoto, list[Face], list[np.ndarray]]:
    """Decode, detect and crop one photo: the photo, its faces (best first) and their 160x160 crops."""
    clock = _StageClock(Counter() if seconds is None else seconds)
    with clock("decode"):
        photo = decode_photo(data, min_long_side=detector.settings.max_side)
    with clock("detect"):
        faces = detector.detect(photo)
    with clock("crop"):
        crops = crops_of(data, photo, [face.box for face in faces])
    return photo, faces, crops


def photo_id_of(data: bytes) -> str:
    """A photo's id: the hash of its bytes (the same file anywhere is the same photo)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class _StageClock:
    def __init__(self, seconds: Counter) -> None:
        self.seconds = seconds

    def __call__(self, stage: str) -> _StageClock:
        self.stage = stage
        return self

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self.stage] += time.perf_counter() - self.started


def face_id(photo_id: str, box: Sequence[float]) -> str:
    """Content hash + rounded box: the same face of the same file gets the same id on every scan."""
    key = f"{photo_id}:" + ",".join(str(round(v)) for v in box)
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def photo_row(
    file: PhotoFile,
    photo_id: str | None,
    photo: DecodedPhoto | None = None,
    n_faces: int = 0,
    error: PhotoError | None = None,
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
    }


def _face_row(photo_id: str, path: str, index: int, face: Face, model: str) -> dict:
    return {
        "face_id": face_id(photo_id, face.box),
        "photo_id": photo_id,
        "path": path,
        "face_index": index,
        "box": list(face.box),
        "score": face.score,
        "landmarks": list(face.landmarks),
        "model": model,
    }


def _faces_table(rows: list[dict]) -> pa.Table:
    if not rows:
        return FACES_SCHEMA.empty_table()
    columns = {name: [r[name] for r in rows] for name in FACES_SCHEMA.names if name != "embedding"}
    embeddings = np.stack([r["embedding"] for r in rows]).astype(np.float32)
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1])
    return pa.table({name: columns[name] for name in FACES_SCHEMA.names}).cast(FACES_SCHEMA)


def _no_crops() -> np.ndarray:
    return np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
