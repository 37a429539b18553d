"""Scan orchestration: discover, plan against the library, run shards on Dask, write as they finish.

The driver owns the library: workers return Arrow tables and the driver writes each shard
atomically, so the library needs no shared filesystem (the photos do: every worker reads them
by the same path).
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facebatch.config import require_device, runtime_and_precision, still_made, DEFAULT_SHARD_SIZE, ScanConfig
from facebatch.imageload import RAW_EXTENSIONS
from facebatch.scan.discovery import Discovery, PhotoFile, discover, photo_extensions
from facebatch.videoload import VIDEO_EXTENSIONS
from facebatch.models.catalog import DEFAULT_MODEL, model_for, model_named
from facebatch.models.embedding import model_of_tag, model_tag, same_model, split_model_tag
from facebatch.models.faces import PipelineBuilder, facenet_weights, prepare_builder
from facebatch.errors import DamagedPart, FacebatchError, PhotoError
from facebatch.scan.pipeline import (
    Forgotten,
    ForgottenFace,
    KnownPhoto,
    ReembedResult,
    ShardResult,
    iou,
    photo_row,
    reembed_shard,
    run_shard,
)
from facebatch.schema import FACES_SCHEMA, LIVE_STATUSES, embedding_column, PHOTOS_SCHEMA, STATUS_ERROR, STATUS_GONE, STATUS_NO_FACES
from facebatch.store import Library, LibraryModel
from facebatch.wording import counted
from facebatch.models.weights import DEFAULT_WEIGHTS

logger = logging.getLogger(__name__)


@dataclass
class ScanPlan:
    todo: list[PhotoFile]  # new or changed: hashed on a worker, model work unless the content is known
    unchanged: int
    still_failing: int  # unchanged photos whose last scan failed (retried with --retry-errors)
    gone: list[dict[str, Any]]  # latest rows of files no longer on disk
    previous: dict[str, int]  # photo_id -> its live row in `photos`, to reuse for moved or touched files
    total: int  # photos found on disk
    photos: pa.Table  # the photos table `previous` points into
    old_faces: dict[str, list[tuple[str, list[float]]]] = field(default_factory=dict)  # --force: ids to keep

    def previous_row(self, photo_id: str) -> dict[str, Any]:
        return self.photos.slice(self.previous[photo_id], 1).to_pylist()[0]


@dataclass
class ScanSummary:
    library: str
    found: int = 0
    unchanged: int = 0
    processed: int = 0  # photos that went through the models
    reused: int = 0  # moved, copied or touched files whose content was known
    copied: int = 0  # ... of them copies: the file they copy is still where it was
    touched: int = 0  # ... of them the same path with a new mtime: counted as unchanged
    gone: int = 0
    still_failing: int = 0
    faces: int = 0  # new faces: found for the first time
    found_again: int = 0  # --force: faces detected again, keeping their ids (and labels)
    reembedded: int = 0  # faces embedded again after a model change (no detection)
    errors: Counter = field(default_factory=Counter)
    stage_seconds: Counter = field(default_factory=Counter)
    elapsed: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Photos that failed in this run or failed before and were not retried."""
        return sum(self.errors.values()) + self.still_failing

    def line(self) -> str:
        errors = counted(sum(self.errors.values()), "error")
        if self.errors:
            errors += " (" + ", ".join(f"{kind} {n}" for kind, n in sorted(self.errors.items())) + ")"
        if self.still_failing:
            errors += f"; {self.still_failing} failed before (--retry-errors)"
        if self.failed:
            errors += " (`facebatch errors` lists them)"
        done = self.processed + self.reused
        rate = f" ({done / self.elapsed:.2f} photos/s)" if done and self.elapsed > 0 else ""
        # The faces of the photos scanned now: on a re-scan with nothing new, "0 new faces", not "0 faces".
        again = (f", {self.found_again} found again" if self.found_again else "") + (
            f", {self.reembedded} embedded again" if self.reembedded else "")
        return (
            f"{counted(self.found, 'photo')}: {self.processed} scanned, {self.reused - self.copied - self.touched} moved, "
            + (f"{self.copied} copied, " if self.copied else "") + f"{self.unchanged + self.touched} unchanged, "
            f"{self.gone} gone; {counted(self.faces, 'new face')}{again}; {errors}; {self.elapsed:.1f}s{rate}"
        )


# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 so they hand memory back to the OS.
# Setting it turns off glibc's adaptive mmap threshold: every large tensor becomes a fresh mmap and
# page faults, and the models ran 35% slower (BENCHMARKS.md). Our workers keep their memory instead;
# jobs/dask/worker-config.yaml does the same for an existing cluster.
WORKER_DASK_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

# Called with (photos done, photos to do, faces found, errors) after every shard.
ProgressCallback = Callable[[int, int, int, int], None]


def scan(config: ScanConfig, progress: ProgressCallback | None = None) -> ScanSummary:
    """Bring the library up to date with the photo folders; safe to kill and run again."""
    started = time.monotonic()
    library = Library(config.library)
    # A new library (or --force) always has work: its workers start while the folders are walked
    # and the models prepared. A re-scan starts them only once its plan has work.
    early = EarlyCluster(config) if config.scheduler is None and (config.force or not library.exists()) else None
    try:
        return _scan(config, library, started, early, progress)
    finally:
        if early is not None:
            early.close_unused()


def _scan(config: ScanConfig, library: Library, started: float, early: EarlyCluster | None,
          progress: ProgressCallback | None) -> ScanSummary:
    discovery = _discover(config, library)
    if config.scheduler is None:  # a cluster's workers have their own devices
        require_device(config.device)
    summary = ScanSummary(library=str(library.root), warnings=list(discovery.warnings))
    if not discovery.photos:
        summary.warnings.append(f"no photos under {', '.join(config.roots)} (looked for {looked_for(config.videos)}, "
                                "in any case)")
    with library.lock():
        chosen = choose_model(config, library.model())
        # Turned on for a library scanned without it: photos where no upright face was found are
        # looked at again (turned), though unchanged; photos with faces never are turned.
        newly_rotated = config.detection.find_rotated and library.exists() and not library.turned_no_face_photos()
        rotated = library.finds_rotated(config.detection.find_rotated)
        config = replace(config, detection=replace(config.detection, find_rotated=rotated))
        weights = facenet_weights(chosen.embedding, chosen.weights)
        models = replace(config.models, embedding=chosen.embedding)
        model = model_tag(model_named(chosen.embedding), weights, models.variant)
        config = replace(config, models=models)
        # Made at most once, and only when some photo needs the models (scan or re-embed).
        builder = functools.cache(
            lambda: prepare_builder(config.detection, weights, config.models, config.batch_size, config.device))
        recorded = library.model()
        if recorded is not None and recorded.tag != model:
            builder()  # a model that can't be built (a missing file, no means) fails before the library moves
        if (previous := library.create(replace(chosen, tag=model))) is not None:
            summary.warnings.append(_reembed_notice(library, previous, model))
        library.finds_rotated(rotated)  # a library made by this scan remembers it too
        library.add_roots([os.path.abspath(r) for r in config.roots if os.path.isdir(r)])
        library.remove_unfinished_parts()
        plan = _plan_setting_aside_damage(library, discovery, config, summary, newly_rotated)
        summary.found, summary.unchanged, summary.still_failing = plan.total, plan.unchanged, plan.still_failing
        if pairs := sum(1 for file in plan.todo if file.rendition):
            summary.warnings.append(f"{counted(pairs, 'RAW + JPEG pair')} scanned as one photo each (the RAW, or its "
                                    "JPEG where LibRaw can't read the RAW)")
        if plan.gone:
            _write_gone(library, plan.gone, model)
            summary.gone = len(plan.gone)
        if plan.todo:
            _run_shards(config, library, builder(), model, plan, summary, progress, early)
        if plan.gone or plan.todo:  # otherwise the tables are as the first reconcile left them
            library.reconcile()
        _reembed(config, library, builder, model, summary, progress)
        if rotated:
            library.turned_no_face_photos(done=True)  # only now: a scan killed before it looks again next time
    summary.elapsed = time.monotonic() - started
    return summary


def choose_model(config: ScanConfig, recorded: LibraryModel | None) -> LibraryModel:
    """The model this scan embeds with (its tag is filled in once the weights are resolved).

    What the user gives wins; otherwise the library keeps the model it has, except that a library
    on the default (never chosen, default weights) moves with the default: a better default
    reaches old libraries, by a re-embed that keeps every face id and name. Other weights are
    FaceNet's: they stay FaceNet alone unless a model is named.
    """
    if config.model:
        name, chosen = model_for(config.model, config.weights), True
    elif config.weights not in (None, DEFAULT_WEIGHTS):
        name, chosen = model_for(None, config.weights), True  # other FaceNet weights: FaceNet
    elif recorded is not None and (recorded.chosen or recorded.weights != DEFAULT_WEIGHTS):
        name, chosen = recorded.embedding, True
    else:
        name, chosen = DEFAULT_MODEL, False
    if "facenet" not in model_named(name).nets:
        return LibraryModel("", name, DEFAULT_WEIGHTS, chosen)  # no FaceNet, no weights to remember
    weights = config.weights or (recorded.weights if recorded else DEFAULT_WEIGHTS)
    return LibraryModel("", name, _recorded_path(weights), chosen)


def _recorded_path(weights: str) -> str:
    """A weights file is remembered by its absolute path: the next scan may run from anywhere."""
    return os.path.abspath(os.path.expanduser(weights)) if weights.endswith((".pt", ".pth")) else weights


def _plan_setting_aside_damage(
    library: Library, discovery: Discovery, config: ScanConfig, summary: ScanSummary, no_faces_again: bool = False
) -> ScanPlan:
    """Reconcile and plan; a part that can't be read (a bad sector, a partial copy) is moved to
    LIBRARY/damaged/ and its photos are planned again, as new: same content, same face ids."""
    for damaged in library.damaged_parts():
        _set_aside(library, damaged, summary)
    while True:
        try:
            library.reconcile()  # repairs what a scan killed between writing a shard and reconciling left
            plan = plan_scan(library.read_photos(), discovery.photos, config, no_faces_again)
            if config.force:
                plan.old_faces = _faces_by_photo(library)
            return plan
        except DamagedPart as damaged:
            _set_aside(library, damaged, summary)


def _set_aside(library: Library, damaged: DamagedPart, summary: ScanSummary) -> None:
    moved = library.set_aside(damaged.number)
    summary.warnings.append(f"damaged {damaged.table} part {damaged.path} moved to {library.damaged_dir}; "
                            f"its photos are scanned again ({len(moved)} files set aside)")


def looked_for(videos: bool) -> str:
    """The files a scan lists, in words: the photo extensions, RAW files, videos."""
    photos = " ".join(sorted(photo_extensions(videos=False) - RAW_EXTENSIONS))
    kinds = f"photos ({photos}), RAW files (.cr2 .nef .arw .dng and the others LibRaw reads)"
    return kinds + (f" and videos ({' '.join(sorted(VIDEO_EXTENSIONS))})" if videos else "")


def _discover(config: ScanConfig, library: Library) -> Discovery:
    return discover(config.roots, include=config.include, exclude=config.exclude, skip_dirs=[library.root],
                    videos=config.videos)


def plan_scan(photos: pa.Table, found: Sequence[PhotoFile], config: ScanConfig, no_faces_again: bool = False) -> ScanPlan:
    """Which photos need work: unchanged ones are the same path, size and mtime as their last row
    (with `no_faces_again`, those where no face was found are looked at again all the same)."""
    photos = photos.set_column(photos.schema.get_field_index("mtime"), "mtime", photos["mtime"].cast(pa.int64()))
    # Only the columns planning compares become Python rows: 2.9 s at 1M photos against 9.8 s for whole rows.
    rows = photos.select(["path", "size_bytes", "mtime", "status", "photo_id"]).to_pylist()
    latest = {row["path"]: i for i, row in enumerate(rows)}  # rows come in part order: last wins
    todo, unchanged, still_failing = [], 0, 0
    for file in found:
        row = rows[latest[file.path]] if file.path in latest else None
        if row is not None and not config.force and _same_file(row, file) and not (
                no_faces_again and row["status"] == STATUS_NO_FACES):
            failed = row["status"] == STATUS_ERROR
            if not (failed and config.retry_errors):
                unchanged += 1
                still_failing += failed
                continue
        todo.append(file)
    found_paths = {f.path for f in found}
    roots = [os.path.abspath(r) for r in config.roots]
    gone = [
        i
        for path, i in latest.items()
        if rows[i]["status"] != STATUS_GONE
        and path not in found_paths
        and _under_any(path, roots)
        and not os.path.lexists(path)  # still there but filtered out by --include/--exclude: keep it
    ]
    previous = {}
    if not config.force:
        previous = {
            rows[i]["photo_id"]: i
            for i in latest.values()
            if rows[i]["status"] in LIVE_STATUSES and rows[i]["photo_id"] is not None
            and not (no_faces_again and rows[i]["status"] == STATUS_NO_FACES)
        }
    gone_rows = photos.take(pa.array(gone, pa.int64())).to_pylist()
    return ScanPlan(todo=todo, unchanged=unchanged, still_failing=still_failing, gone=gone_rows, previous=previous,
                    total=len(found), photos=photos)


def _faces_by_photo(library: Library) -> dict[str, list[tuple[str, list[float]]]]:
    faces = library.read_faces(["face_id", "photo_id", "box"], pending=True)
    by_photo: dict[str, list[tuple[str, list[float]]]] = {}
    for face_id, photo_id, box in zip(*(faces[c].to_pylist() for c in ("face_id", "photo_id", "box"))):
        by_photo.setdefault(photo_id, []).append((face_id, box))
    return by_photo


def keep_face_ids(faces: pa.Table, old_faces: dict[str, list[tuple[str, list[float]]]]) -> pa.Table:
    """A face found again (box overlapping an old one, IoU >= 0.5) keeps its old id, and its labels.

    Only --force re-detects known content; with other detection settings the boxes move a little
    and the ids, which hash the box, would change.
    """
    if not old_faces or faces.num_rows == 0:
        return faces
    ids = faces["face_id"].to_pylist()
    taken: set[str] = set()
    for i, (photo_id, box) in enumerate(zip(faces["photo_id"].to_pylist(), faces["box"].to_pylist())):
        candidates = [(iou(box, old_box), old_id) for old_id, old_box in old_faces.get(photo_id, [])
                      if old_id not in taken]
        best = max(candidates, default=(0.0, ""))
        if best[0] >= 0.5:
            ids[i] = best[1]
            taken.add(best[1])
    return faces.set_column(faces.schema.get_field_index("face_id"), "face_id", pa.array(ids, pa.string()))


def _same_file(row: dict[str, Any], file: PhotoFile) -> bool:
    return row["size_bytes"] == file.size_bytes and row["mtime"] == file.mtime_ns


def _under_any(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _write_gone(library: Library, rows: list[dict[str, Any]], model: str) -> None:
    now = datetime.now(timezone.utc)
    tombstones = [
        {**row, "status": STATUS_GONE, "n_faces": 0, "error_kind": None, "error": None, "scanned_at": now}
        for row in rows
    ]
    stats = {"kind": "gone", "photos": len(rows), "faces": 0, "model": model, "finished_at": now.isoformat()}
    library.write_shard(pa.Table.from_pylist(tombstones, PHOTOS_SCHEMA), FACES_SCHEMA.empty_table(), stats, model)


# The guided schedule's smallest shard: below it a shard's own cost (its task, its three files)
# outweighs the balance it buys.
MIN_SHARD_SIZE = 2


def next_shard_size(left: int, slots: int, shard_size: int | None) -> int:
    """How many of the `left` photos the next shard takes: `shard_size` when given, else guided
    self-scheduling (Polychronopoulos and Kuck, 1987) with half its share, 1/(2 x slots) of what is
    left, at most DEFAULT_SHARD_SIZE. Big shards while there is much to do, small ones at the end,
    so no worker sits idle while another finishes a big last shard (on 2 workers the last of 8
    equal shards of 465 LFW-size photos left one idle for 1 s of a 10 s scan). At least one photo
    per slot (and MIN_SHARD_SIZE): the scan writes every shard's three files, and on a big cluster
    2-photo shards would come back faster than it writes them."""
    size = shard_size or min(DEFAULT_SHARD_SIZE, max(MIN_SHARD_SIZE, slots, -(-left // (2 * slots))))
    return min(left, size)


def _run_shards(
    config: ScanConfig,
    library: Library,
    builder: PipelineBuilder,
    model: str,
    plan: ScanPlan,
    summary: ScanSummary,
    progress: ProgressCallback | None,
    early: EarlyCluster | None = None,
) -> None:
    known_ids = frozenset(plan.previous)
    forgotten = _forgotten_boxes(library)
    done = 0
    with dask_client(config, early) as client:
        resources, warning = task_resources(_first_workers(client))
        if warning:
            summary.warnings.append(warning)
        # Sent once to every worker, not once per task; wrapped so scatter doesn't split the set.
        known = client.scatter([known_ids], broadcast=True)[0] if known_ids else known_ids
        if forgotten:
            forgotten = client.scatter([forgotten], broadcast=True)[0]
        if progress:
            progress(0, len(plan.todo), 0, 0)
        for shard, future in _finished(client, run_shard, builder, plan.todo, config.shard_size, (known, forgotten),
                                       "shard", resources):
            result = _shard_result(future, shard)
            _write_result(library, result, plan, summary, model)
            done += len(shard)
            if progress:
                progress(done, len(plan.todo), summary.faces, summary.failed)


def _forgotten_boxes(library: Library) -> Forgotten:
    """The faces the user had forgotten, by photo id and by path (scan.pipeline.Forgotten)."""
    tombstones = library.read_forgotten()
    found: dict[str, list[ForgottenFace]] = {}
    for photo_id, path, box, span in zip(*(tombstones[c].to_pylist() for c in ("photo_id", "path", "box", "video_span"))):
        for key in (photo_id, path):
            found.setdefault(key, []).append(ForgottenFace(tuple(box), tuple(span) if span else None))
    return found


# How often the scan counts the workers again (one that joined: a SLURM job out of the queue).
_RECOUNT_SECONDS = 2.0
_POLL_SECONDS = 0.05


def _first_workers(client: Any) -> dict[str, Any]:
    """The workers of the cluster, once there is one (a SLURM job may still be in the queue):
    the tasks' resources are chosen from them."""
    client.wait_for_workers(1)
    return client.scheduler_info().get("workers", {})


def _finished(
    client: Any, task: Callable[..., Any], builder: PipelineBuilder, items: Sequence[Any], shard_size: int | None,
    extra: tuple[Any, ...], kind: str, resources: dict[str, int] | None,
) -> Iterator[tuple[list[Any], Any]]:
    """task(builder, shard, *extra) on the workers for consecutive shards of `items`
    (next_shard_size), each asking for `resources`: (shard, future) as each finishes, whichever first.

    Shards go out in order, two per model slot of the workers there now (counted again every few
    seconds, for workers that join later): each worker has its next shard at hand, and the rest
    wait here until a worker is nearly free. Dask hands out tasks that ask for resources as soon
    as they arrive, by count: given all at once, one worker of two was left with the guided
    schedule's bigger shards while the other idled."""
    from distributed import as_completed

    run_id = uuid.uuid4().hex[:8]
    start, number, slots, counted = 0, 0, 1, -_RECOUNT_SECONDS
    in_flight: dict[Any, list[Any]] = {}
    finished = as_completed()

    def top_up() -> None:
        nonlocal start, number, slots, counted
        if time.monotonic() - counted >= _RECOUNT_SECONDS:
            slots, counted = model_slots(client.scheduler_info().get("workers", {}), resources), time.monotonic()
        while start < len(items) and len(in_flight) < 2 * slots:
            shard = list(items[start : start + next_shard_size(len(items) - start, slots, shard_size)])
            future = client.submit(task, builder, shard, *extra, key=f"facebatch-{kind}-{run_id}-{number}",
                                   pure=False, resources=resources)
            in_flight[future] = shard
            finished.add(future)
            start, number = start + len(shard), number + 1

    top_up()
    while not finished.is_empty():
        if not finished.has_ready():
            time.sleep(_POLL_SECONDS)
            top_up()
            continue
        done = [(in_flight.pop(future), future) for future in finished.next_batch(block=False)]
        top_up()  # before the results are written: the workers stay busy meanwhile
        yield from done


def _shard_result(future: Any, shard: list[PhotoFile]) -> ShardResult:
    """A shard whose worker died (after Dask's retries) becomes error rows, not a failed scan."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - KilledWorker, CommClosedError, an unpicklable result...
        error = PhotoError("worker_failed", f"the worker processing this photo failed: {type(exc).__name__}: {exc}")
        rows = [photo_row(file, None, error=error) for file in shard]
        return ShardResult(
            photos=pa.Table.from_pylist(rows, PHOTOS_SCHEMA),
            faces=FACES_SCHEMA.empty_table(),
            reused=[],
            stage_seconds={},
            errors={"worker_failed": len(rows)},
        )


def _write_result(library: Library, result: ShardResult, plan: ScanPlan, summary: ScanSummary, model: str) -> None:
    now = datetime.now(timezone.utc)
    reused_rows = [
        {**plan.previous_row(photo_id), "path": file.path, "size_bytes": file.size_bytes, "mtime": file.mtime_ns,
         "scanned_at": now}
        for file, photo_id in result.reused
    ]
    photos = result.photos
    if reused_rows:
        photos = pa.concat_tables([photos, pa.Table.from_pylist(reused_rows, PHOTOS_SCHEMA)])
    stats = {
        "kind": "scan",
        "photos": photos.num_rows,
        "scanned": result.photos.num_rows,
        "reused": len(reused_rows),
        "faces": result.faces.num_rows,
        "errors": result.errors,
        "stage_seconds": result.stage_seconds,
        "model": model,
        "finished_at": now.isoformat(),
    }
    faces = keep_face_ids(result.faces, plan.old_faces)
    library.write_shard(photos, faces, stats, model)
    summary.processed += result.photos.num_rows
    summary.reused += len(reused_rows)
    before = [(file.path, plan.previous_row(photo_id)["path"]) for file, photo_id in result.reused]
    summary.touched += sum(1 for path, old in before if old == path)
    summary.copied += sum(1 for path, old in before if old != path and os.path.exists(old))
    again = sum(1 for face_id, photo_id in zip(faces["face_id"].to_pylist(), faces["photo_id"].to_pylist())
                if any(face_id == old_id for old_id, _ in plan.old_faces.get(photo_id, ())))
    summary.faces += faces.num_rows - again
    summary.found_again += again
    summary.errors.update(result.errors)
    summary.stage_seconds.update(result.stage_seconds)


# Each shard asks its worker for one `model` slot: a worker started with `--resources model=1`
# (jobs/dask/worker.sh) runs one shard at a time with its own models and all its threads, and the
# shards waiting for a slot stay with the scheduler, free to go to whichever worker is idle.
# Without the resource, the tasks Dask hands a many-threaded worker wait on its model lock there,
# out of reach of idle workers.
MODEL_RESOURCE = "model"


def model_slots(workers: dict[str, Any], resources: dict[str, int] | None) -> int:
    """How many shards the workers run at once: their `model` slots, or one each."""
    if resources:
        return max(1, sum(int(w.get("resources", {}).get(MODEL_RESOURCE, 1)) for w in workers.values()))
    return max(1, len(workers))


def task_resources(workers: dict[str, Any]) -> tuple[dict[str, int] | None, str | None]:
    """(resources each shard asks for, a warning) for the workers the scheduler knows."""
    if workers and all(w.get("resources", {}).get(MODEL_RESOURCE, 0) >= 1 for w in workers.values()):
        return {MODEL_RESOURCE: 1}, None
    crowded = [w for w in workers.values() if w.get("nthreads", 1) > 1]
    if crowded:
        return None, (f"{len(crowded)} Dask workers have several threads and no `{MODEL_RESOURCE}` resource: their "
                      f"shards wait for one another there; start workers with jobs/dask/worker.sh (or `dask worker "
                      f"... --resources {MODEL_RESOURCE}=1`)")
    return None, None


def worker_arguments(cores: int, threads_per_model: int = 1) -> list[str]:
    """`dask worker` options for a machine of `cores`: one worker process, one model and its
    threads per group of `threads_per_model` cores (the same as the local cluster)."""
    threads = max(1, threads_per_model)
    return ["--nworkers", str(max(1, cores // threads)), "--nthreads", str(threads),
            "--resources", f"{MODEL_RESOURCE}=1"]


# --------------------------------------------------------------------------- re-embed (another model)
# A library switched to another model, weights, runtime or precision keeps its faces: each is
# embedded again from its stored box and landmarks (no detection), shard by shard on the workers,
# and written as a part like any scan's, so a killed re-embed resumes where it stopped. Until then
# its faces are pending: Library.read_faces leaves them out of the people commands.

REEMBED_COLUMNS = ["face_id", "photo_id", "path", "face_index", "box", "score", "landmarks", "model", "rotation",
                   "quality", "video_time", "video_span"]


def _reembed_notice(library: Library, previous: str, model: str) -> str:
    old, new = model_of_tag(previous).name, model_of_tag(model).name
    if old == new and split_model_tag(previous)[0] == split_model_tag(model)[0]:
        (runtime, _), (was_runtime, was_precision) = (runtime_and_precision(split_model_tag(t)[1]) for t in (model, previous))
        kept = runtime == was_runtime and still_made(split_model_tag(previous)[1], new)
        keeps = f"; `--precision {was_precision}` keeps them" if kept else ""
        change = f"with {split_model_tag(model)[1]} (were {split_model_tag(previous)[1]}{keeps})"
    elif old == new:
        change = f"with other weights ({split_model_tag(model)[0].split('/')[0]})"
    else:
        change = f"by the {new} model (were {old}; `--model {old}` keeps it)"
    return (f"library {library.root}: its faces are embedded again {change}, from their stored boxes without "
            "detecting again; face ids and names are kept")


def plan_reembed(faces: pa.Table, model: str) -> list[KnownPhoto]:
    """Photos with faces embedded by another model than `model` (REEMBED_COLUMNS rows)."""
    fresh = {m: same_model(m, model) for m in pc.unique(faces["model"]).to_pylist()}  # a few tags, many faces
    stale = {p for p, m in zip(faces["photo_id"].to_pylist(), faces["model"].to_pylist()) if not fresh[m]}
    by_photo: dict[str, list[int]] = {}
    for i, photo_id in enumerate(faces["photo_id"].to_pylist()):
        if photo_id in stale:
            by_photo.setdefault(photo_id, []).append(i)
    face_ids, paths, boxes, points = (faces[c].to_pylist() for c in ("face_id", "path", "box", "landmarks"))
    turns, times = faces["rotation"].to_pylist(), faces["video_time"].to_pylist()
    photos = [KnownPhoto(paths[rows[0]], photo_id, tuple(face_ids[i] for i in rows), tuple(tuple(boxes[i]) for i in rows),
                         tuple(tuple(points[i]) for i in rows), tuple(turns[i] or 0 for i in rows),
                         tuple(times[i] for i in rows))
              for photo_id, rows in by_photo.items()]
    return photos


def _reembed(
    config: ScanConfig,
    library: Library,
    builder: Callable[[], PipelineBuilder],
    model: str,
    summary: ScanSummary,
    progress: ProgressCallback | None,
) -> None:
    """Embed again every face of another model, runtime or precision (a switch, or one a kill left half done)."""
    # Every scan asks; the answer is nearly always no: the model column alone says so.
    if all(same_model(m, model) for m in pc.unique(library.read_faces(["model"], pending=True)["model"]).to_pylist()):
        return
    faces = library.read_faces(REEMBED_COLUMNS, pending=True)
    photos = plan_reembed(faces, model)
    if not photos:
        return
    rows = {face_id: i for i, face_id in enumerate(faces["face_id"].to_pylist())}
    total, done, skipped = len(photos), 0, 0
    with dask_client(config) as client:
        resources, _ = task_resources(_first_workers(client))  # as the scan's shards ask
        for shard, future in _finished(client, reembed_shard, builder(), photos, config.shard_size, (), "reembed",
                                       resources):
            try:
                result: ReembedResult = future.result()
            except Exception as exc:  # noqa: BLE001 - a dead worker: these faces wait for the next scan
                result = ReembedResult([], np.zeros((0, 0), np.float32),
                                       {p.path: f"{type(exc).__name__}: {exc}" for p in shard}, {})
            _write_reembedded(library, faces, rows, result, model)
            summary.reembedded += len(result.face_ids)
            done += len(shard)
            skipped += len(result.skipped)
            summary.stage_seconds.update(result.stage_seconds)
            if progress:
                progress(done, total, summary.faces, summary.failed)
    library.reconcile()
    if skipped:
        summary.warnings.append(f"{skipped} photos were not embedded again (changed or unreadable since their scan); "
                                "the next scan does them")


def _write_reembedded(library: Library, faces: pa.Table, rows: dict[str, int], result: ReembedResult, model: str) -> None:
    """The faces' rows as they were, with the new embeddings and model: the latest part of their
    photos, so `reconcile` drops the old rows."""
    if not result.face_ids:
        return
    table = faces.take(pa.array([rows[f] for f in result.face_ids], pa.int64()))
    embeddings = result.embeddings.astype(np.float32)
    columns = {name: table[name] for name in table.column_names if name != "model"}
    columns["model"] = pa.array([model] * table.num_rows, pa.string())
    columns["embedding"] = embedding_column(embeddings)
    stats = {"kind": "reembed", "photos": 0, "faces": table.num_rows, "stage_seconds": result.stage_seconds,
             "model": model, "finished_at": datetime.now(timezone.utc).isoformat()}
    library.write_shard(PHOTOS_SCHEMA.empty_table(), pa.table({n: columns[n] for n in FACES_SCHEMA.names}), stats, model)


@contextmanager
def dask_client(config: ScanConfig, early: EarlyCluster | None = None) -> Iterator[Any]:
    """A client of the given scheduler, or of a local cluster of worker processes that dies with us
    (the one `early` started, when given)."""
    from distributed import Client

    if config.scheduler:
        try:
            client = Client(config.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise FacebatchError(f"cannot reach the Dask scheduler at {config.scheduler}: {exc}") from None
        with client:
            yield client
        return
    with early.take() if early is not None else local_cluster(config) as cluster, Client(cluster) as client:
        yield client


def local_cluster(config: ScanConfig) -> Any:
    """This machine's workers: processes that load the models once each."""
    import dask
    from distributed import LocalCluster

    # Worker processes load torch once each; one Dask thread each unless asked, torch uses the rest.
    with dask.config.set(WORKER_DASK_CONFIG):
        return LocalCluster(
            n_workers=config.local_workers(),
            threads_per_worker=config.threads_per_worker,
            processes=True,
            dashboard_address=":0",  # any free port: None does not disable it, and 8787 may be taken
            # Errors of our tasks come back to the client as rows; a worker's own ERROR logs are noise
            # here, e.g. a heartbeat racing the scheduler's close printed a traceback after a finished scan.
            silence_logs=logging.CRITICAL,
            resources={MODEL_RESOURCE: 1},
        )


class EarlyCluster:
    """The local cluster started in a thread as the scan begins (1.4 s of process start-up that
    then overlaps discovery, the library's read and the models' preparation)."""

    def __init__(self, config: ScanConfig) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facebatch-cluster")
        self._future = self._executor.submit(local_cluster, config)
        self._taken = False

    def take(self) -> Any:
        self._taken = True
        return self._future.result()

    def close_unused(self) -> None:
        """Close it when the scan had nothing for it (an empty folder) or failed before using it."""
        if not self._taken:
            try:
                self._future.result().close()
            except Exception:  # noqa: BLE001 - it failed to start: nothing to close, the scan says why
                pass
        self._executor.shutdown()  # its task is done: its thread ends at once

