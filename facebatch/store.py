"""The library folder, and the `Library` facade: every table is read and written here, nowhere else.

Layout (pandas, DuckDB and PyArrow read `photos/` and `faces/` as datasets):

    LIBRARY/library.json             the model the embeddings come from
    LIBRARY/photos/part-000042.parquet
    LIBRARY/faces/part-000042.parquet
    LIBRARY/shards/part-000042.json  per-shard stats, written last: the shard is done
    LIBRARY/clusters.parquet         face -> cluster, written whole by `facebatch cluster`
    LIBRARY/cluster_pairs.parquet    each cluster's nearest other clusters (merge suggestions)
    LIBRARY/clusters.json            the clustering run counter, next cluster number, settings
    LIBRARY/labels.parquet           what the user said: an append-only history (people.labels)
    LIBRARY/labels-generations/      the last LABEL_GENERATIONS versions of labels.parquet
    LIBRARY/forgotten.parquet        faces the user had forgotten: ids, photos and boxes only
    LIBRARY/.lock                    held by the command that is writing

A part whose stats file is missing was cut short by a kill: readers skip it and the next scan
deletes it. Parts are numbered in the order they were written, so when a path appears in two parts
(a changed photo, a retried error, a removed photo) the later part wins; `reconcile` rewrites the
older part. Schemas: facebatch.schema.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facebatch.errors import (
    DamagedPart,
    InputError,
    LibraryBusy,
    LibraryDamaged,
    LibraryMissing,
    OutputError,
    UncalibratedModel,
)
from facebatch.models.quality import face_quality
from facebatch.models.scale import DistanceScale
from facebatch.files import atomic_write_json, atomic_write_table
from facebatch.schema import (
    CLUSTER_PAIRS_SCHEMA,
    CLUSTERS_SCHEMA,
    FORGOTTEN_SCHEMA,
    FACES_SCHEMA,
    LABELS_SCHEMA,
    PHOTOS_SCHEMA,
    STATUS_ERROR,
    STATUS_OK,
)

PART_NAME = re.compile(r"^part-(\d{6,})\.(parquet|json)$")
# Old versions of labels.parquet kept: a damaged file is restored from the newest readable one.
LABEL_GENERATIONS = 20
TABLE_SCHEMAS = {"photos": PHOTOS_SCHEMA, "faces": FACES_SCHEMA}


QUALITY_FROM = ("box", "score", "landmarks")


def with_quality(faces: pa.Table) -> pa.Table:
    """The faces with their `quality` filled where it is null (parts written before it was recorded)."""
    column = faces["quality"]
    if column.null_count == 0:
        return faces
    def flat(name: str) -> np.ndarray:
        values = faces[name].combine_chunks()
        values = values.flatten() if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) else values
        return np.asarray(values.to_numpy(zero_copy_only=False), np.float64)

    computed = face_quality(flat("box").reshape(-1, 4), flat("score"), flat("landmarks").reshape(-1, 10))
    stored = flat("quality")
    filled = np.where(np.isnan(stored), computed, stored).astype(np.float32)
    return faces.set_column(faces.schema.get_field_index("quality"), faces.schema.field("quality"), pa.array(filled))


def read_table_file(path: Path, schema: pa.Schema | None) -> pa.Table:
    """One Parquet file of the library's own (clusters, labels); empty when it isn't there yet.

    schema None: as stored (for files an older version wrote, upgraded by the caller).
    """
    if not path.exists():
        return schema.empty_table() if schema is not None else pa.table({})
    try:
        return pq.read_table(path, schema=schema)
    except (OSError, pa.ArrowException) as exc:
        raise LibraryDamaged(f"cannot read {path}: {exc}; `facebatch check` says what is damaged") from exc


@dataclass(frozen=True, order=True)
class FailedPhoto:
    """A file the last scan of it could not use (photos rows with status `error`)."""

    path: str
    kind: str  # error_kind: not_an_image, truncated, too_large, ...
    message: str


@dataclass(frozen=True)
class LibraryModel:
    """What library.json records of the embedding model: its tag (as every face row carries it), the
    model's name (models.catalog), the --weights it was scanned with, and whether the user chose
    the model (a library on the default moves with the default; a chosen one stays)."""

    tag: str
    embedding: str
    weights: str
    chosen: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"model": self.tag, "embedding": self.embedding, "weights": self.weights, "chosen": self.chosen}

    @staticmethod
    def from_info(info: dict[str, Any]) -> LibraryModel:
        """Libraries from before model names recorded only the tag: FaceNet, weights named in it."""
        from facebatch.models.embedding import model_of_tag

        from facebatch.models.weights import DEFAULT_WEIGHTS

        tag = str(info["model"])
        model = model_of_tag(tag)
        # FaceNet's weights are named in its tag; a model without FaceNet has none to remember.
        weights = info.get("weights") or (tag.split("@", 1)[0].split("[")[-1] if "facenet" in model.nets else DEFAULT_WEIGHTS)
        return LibraryModel(tag, info.get("embedding") or model.name, weights, bool(info.get("chosen")))


@dataclass(frozen=True)
class Library:
    root: Path

    @property
    def photos_dir(self) -> Path:
        return self.root / "photos"

    @property
    def faces_dir(self) -> Path:
        return self.root / "faces"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def info_path(self) -> Path:
        return self.root / "library.json"

    def exists(self) -> bool:
        return self.info_path.exists()

    def create(self, model: LibraryModel) -> str | None:
        """Make the folders and record the embedding model. When the library had another model (a
        runtime, precision, weights or model change), the new one is recorded and the previous tag
        returned: its faces are to be embedded again from their stored boxes (the scan does it,
        keeping every face id and label); until then they are pending (`read_faces` leaves them out)."""
        info = self.read_info()
        previous = info.get("model") if info is not None else None
        for folder in (self.photos_dir, self.faces_dir, self.shards_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if info is None or any(info.get(k) != v for k, v in model.to_json().items()):
            atomic_write_json(self.info_path, {**(info or {"format": 1}), **model.to_json()})
        if previous is not None and previous != model.tag:
            return str(previous)
        return None

    def model(self) -> LibraryModel | None:
        """The model the library's embeddings come from; None before the first scan."""
        info = self.read_info()
        return LibraryModel.from_info(info) if info and info.get("model") else None

    def scale(self) -> DistanceScale:
        """The distance scale of the library's model: every people command judges distances on it.

        The catalogue's scale holds for the nets' own weights; other FaceNet weights have none, and
        the people commands refuse them.
        """
        from facebatch.models.catalog import DEFAULT_MODEL
        from facebatch.models.embedding import measured_scale

        model = self.model()
        if model is None:  # nothing scanned yet: the people commands say so themselves
            return measured_scale(None)
        scale = measured_scale(model.tag)
        if scale is None:
            raise UncalibratedModel(
                f"library {self.root} holds {model.embedding} embeddings with weights {model.weights}, whose distances "
                "facebatch has not measured: the people commands need a measured model; `facebatch scan FOLDER "
                f"--model {DEFAULT_MODEL}` embeds the faces again with one, keeping every face id and name")
        return scale

    def finds_rotated(self, asked: bool) -> bool:
        """Whether scans look at sideways photos (--find-rotated): once asked, always, so that a
        later scan (a --force one too) never loses the faces only the turned passes find."""
        return self._sticky_flag("find_rotated", asked)

    def turned_no_face_photos(self, done: bool = False) -> bool:
        """Whether a scan that looks at sideways photos finished over this library (its photos with
        no upright face were looked at turned); `done` records that one just did."""
        return self._sticky_flag("no_face_photos_turned", done)

    def _sticky_flag(self, key: str, now: bool) -> bool:
        """A flag of library.json that, once set, stays set; `now` sets it (once the library is made)."""
        info = self.read_info()
        if now and info is not None and not info.get(key):
            atomic_write_json(self.info_path, {**info, key: True})
        return now or bool((info or {}).get(key))

    def add_roots(self, roots: list[str]) -> None:
        """Remember the folders scanned into this library (listings show paths relative to them)."""
        info = self.read_info() or {}
        known = info.get("roots", [])
        new = [r for r in roots if r not in known]
        if new:
            atomic_write_json(self.info_path, {**info, "roots": sorted(known + new)})

    def scanned_roots(self) -> list[str]:
        """The scanned folders, shortest first: a photo is shown relative to the outermost scanned
        folder that holds it, so two photos never show the same path (a folder scanned again on
        its own, e.g. a/b after a, would make a/1.jpg and a/b/1.jpg both "1.jpg")."""
        return sorted((self.read_info() or {}).get("roots", []), key=len)

    def read_info(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.info_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LibraryDamaged(f"cannot read {self.info_path}: {exc}") from exc

    @contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """One writer at a time, waiting up to `wait` seconds for the one before. flock is released
        by the kernel when a killed command dies, so a kill never leaves the library locked."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / ".lock", "a+")
        except OSError as exc:
            raise OutputError(f"cannot write to library {self.root}: {exc.strerror}") from exc
        with handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "another process"
                        raise LibraryBusy(
                            f"library {self.root} is in use by {holder}; wait for it to finish"
                        ) from None
                    time.sleep(0.05)
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()}")
            handle.flush()
            yield

    # --- parts ---------------------------------------------------------------------------

    def part_numbers(self, folder: Path) -> set[int]:
        if not folder.is_dir():
            return set()
        return {int(m.group(1)) for name in os.listdir(folder) if (m := PART_NAME.match(name))}

    def next_part_number(self) -> int:
        used = set().union(*(self.part_numbers(d) for d in (self.photos_dir, self.faces_dir, self.shards_dir)))
        return max(used, default=0) + 1

    def write_shard(self, photos: pa.Table, faces: pa.Table, stats: dict[str, Any], model: str) -> int:
        """Faces, then photos, then the stats file that marks the shard done."""
        number = self.next_part_number()
        name = f"part-{number:06d}"
        metadata = {"facebatch.model": model}
        atomic_write_table(self.faces_dir / f"{name}.parquet", with_quality(faces.cast(FACES_SCHEMA)), metadata)
        atomic_write_table(self.photos_dir / f"{name}.parquet", photos.cast(PHOTOS_SCHEMA), metadata)
        atomic_write_json(self.shards_dir / f"{name}.json", {**stats, "part": name})
        return number

    def remove_unfinished_parts(self) -> int:
        """Delete parts that a killed scan wrote without their stats file; return how many."""
        done = self.part_numbers(self.shards_dir)
        removed = 0
        for folder in (self.photos_dir, self.faces_dir):
            for number in self.part_numbers(folder) - done:
                (folder / f"part-{number:06d}.parquet").unlink(missing_ok=True)
                removed += 1
        for folder in (self.photos_dir, self.faces_dir, self.shards_dir):
            if folder.is_dir():
                for name in os.listdir(folder):
                    if name.startswith(".") and name.endswith(".tmp"):
                        (folder / name).unlink(missing_ok=True)
        return removed

    def read_table(self, table: str, columns: list[str] | None = None, with_part: bool = False) -> pa.Table:
        """All parts of `photos` or `faces`, in part order; `with_part` adds the part number."""
        schema = TABLE_SCHEMAS[table]
        pieces = []
        # Only finished shards: a part without its stats file may be half written by a scan now.
        for number in self.finished_parts(table):
            piece = self.read_part(table, number, columns)
            if with_part:
                piece = piece.append_column("part", pa.array(np.full(piece.num_rows, number, np.int64)))
            pieces.append(piece)
        if not pieces:
            empty = schema if columns is None else pa.schema([schema.field(c) for c in columns])
            if with_part:
                empty = empty.append(pa.field("part", pa.int64()))
            return empty.empty_table()
        return pa.concat_tables(pieces)

    def finished_parts(self, table: str) -> list[int]:
        """Part numbers of `table` whose shard is finished (its stats file exists), in order."""
        return sorted(self.part_numbers(self.root / table) & self.part_numbers(self.shards_dir))

    def part_path(self, table: str, number: int) -> Path:
        return self.root / table / f"part-{number:06d}.parquet"

    def read_part(self, table: str, number: int, columns: list[str] | None = None) -> pa.Table:
        path = self.part_path(table, number)
        try:
            return pq.read_table(path, columns=columns, schema=TABLE_SCHEMAS[table])
        except (OSError, pa.ArrowException) as exc:
            raise DamagedPart(table, number, path, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]) from None

    def damaged_parts(self, full: bool = False) -> list[DamagedPart]:
        """Parts that can't be read: the footer of each (cheap: catches a file cut short), or with
        `full` every row of every part (`facebatch check`)."""
        found = []
        for table in TABLE_SCHEMAS:
            for number in self.finished_parts(table):
                try:
                    if full:
                        self.read_part(table, number)
                    else:
                        pq.read_metadata(self.part_path(table, number))
                except DamagedPart as damaged:
                    found.append(damaged)
                except (OSError, pa.ArrowException) as exc:
                    found.append(DamagedPart(table, number, self.part_path(table, number), str(exc).splitlines()[0]))
        return found

    @property
    def damaged_dir(self) -> Path:
        return self.root / "damaged"

    def set_aside(self, number: int) -> list[Path]:
        """Move every file of shard `number` (photos, faces, stats) into LIBRARY/damaged/, never
        deleting: its photos are then unknown to the tables, so the next scan scans them again
        (same content, same photo and face ids, so names given to its faces still hold)."""
        self.damaged_dir.mkdir(exist_ok=True)
        moved = []
        for folder, suffix in ((self.photos_dir, "parquet"), (self.faces_dir, "parquet"), (self.shards_dir, "json")):
            source = folder / f"part-{number:06d}.{suffix}"
            if source.exists():
                target = self.damaged_dir / f"{folder.name}-part-{number:06d}.{suffix}"
                if target.exists():
                    target = target.with_name(f"{target.stem}-{time.time_ns()}.{suffix}")
                os.replace(source, target)
                moved.append(target)
        return moved

    def read_photos(self) -> pa.Table:
        return self.read_table("photos")

    def failed_photos(self) -> list[FailedPhoto]:
        """Every file whose latest scan failed, by path (a file fixed or gone since is not listed)."""
        photos = self.read_table("photos", ["path", "status", "error_kind", "error"])
        paths = photos["path"].to_pylist()
        latest = _last_index_by_key(paths)  # parts in order: the last row of a path wins
        failed = [int(i) for i in np.flatnonzero(pc.equal(photos["status"], STATUS_ERROR).to_numpy(zero_copy_only=False))
                  if latest[paths[i]] == i]
        rows = photos.take(pa.array(failed, pa.int64())).to_pylist()
        return sorted(FailedPhoto(r["path"], r["error_kind"] or "internal", r["error"] or "") for r in rows)

    def read_faces(self, columns: list[str] | None = None, pending: bool = False) -> pa.Table:
        """The faces embedded by the library's model; with `pending`, also those a model change left
        waiting for their re-embed (another model's vectors: not comparable, not even of one size)."""
        model = None if pending else self.model()
        wanted = columns
        if model is not None and wanted is not None and "model" not in wanted:
            wanted = [*wanted, "model"]
        if wanted is not None and "quality" in wanted:
            wanted = [*wanted, *(c for c in QUALITY_FROM if c not in wanted)]
        faces = self.read_table("faces", wanted)
        if model is not None:
            fresh = _of_the_model(faces, model)
            if not pc.all(fresh).as_py():
                faces = faces.filter(fresh)
        if wanted is None or "quality" in wanted:
            faces = with_quality(faces)
        return faces if wanted is columns else faces.select(columns)

    def pending_photos(self) -> set[str]:
        """Photos with faces a model change left waiting for their re-embed (the next scan does it)."""
        if (model := self.model()) is None:
            return set()
        faces = self.read_table("faces", ["photo_id", "model"])
        return set(faces.filter(pc.invert(_of_the_model(faces, model)))["photo_id"].to_pylist())

    # --- people: clusters (derived, rewritten whole) and labels (the user's, append-only) ----

    @property
    def clusters_path(self) -> Path:
        return self.root / "clusters.parquet"

    @property
    def cluster_pairs_path(self) -> Path:
        return self.root / "cluster_pairs.parquet"

    @property
    def cluster_state_path(self) -> Path:
        return self.root / "clusters.json"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.parquet"

    @property
    def label_generations_dir(self) -> Path:
        return self.root / "labels-generations"

    @property
    def adapter_dir(self) -> Path:
        """`facebatch train`'s adapter (people.adapter): its weights and what it was trained on."""
        return self.root / "adapter"

    def has_clusters(self) -> bool:
        return self.clusters_path.exists()

    # --- what a command needs, or one line saying why it is not there ----------------------

    def require(self) -> None:
        """A library at this root."""
        if not self.exists():
            raise LibraryMissing(self.root)

    def require_faces(self) -> None:
        """A library with faces (what `report` and `review` show)."""
        self.require()
        if not self.read_faces(["face_id"]).num_rows:
            photos = self.read_table("photos", ["status"]).num_rows
            if photos:
                raise InputError(f"library {self.root} has {photos} photos and no face was found in them: nothing to show")
            raise LibraryMissing(self.root, f"library {self.root} has no photos yet: run `facebatch scan FOLDER` first")

    def require_clusters(self) -> pa.Table:
        """The clusters of the last `facebatch cluster`."""
        self.require()
        if not self.has_clusters():
            raise LibraryMissing(self.root, "no clusters yet: run `facebatch cluster` first")
        return self.read_clusters()

    def read_clusters(self) -> pa.Table:
        """face_id -> cluster_id of the last `facebatch cluster`; empty before the first."""
        table = read_table_file(self.clusters_path, None)
        if table.num_rows and "distance" not in table.column_names:  # written before distances
            table = table.append_column("distance", pa.nulls(table.num_rows, pa.float32()))
        if table.num_rows and "mode" not in table.column_names:  # written before modes: one per cluster
            table = table.append_column("mode", table["cluster_id"])
        if table.num_rows and "core" not in table.column_names:  # written before cores: every member
            table = table.append_column("core", pc.greater_equal(table["cluster_id"], 0))
        return table.select(CLUSTERS_SCHEMA.names).cast(CLUSTERS_SCHEMA) if table.num_rows else CLUSTERS_SCHEMA.empty_table()

    def read_cluster_pairs(self) -> pa.Table:
        return read_table_file(self.cluster_pairs_path, CLUSTER_PAIRS_SCHEMA)

    def read_cluster_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.cluster_state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LibraryDamaged(f"cannot read {self.cluster_state_path}: {exc}") from exc

    def write_clustering(self, clusters: pa.Table, pairs: pa.Table | None, state: dict[str, Any]) -> None:
        """State first: a kill between the writes only skips cluster numbers, never reuses one."""
        atomic_write_json(self.cluster_state_path, state)
        atomic_write_table(self.clusters_path, clusters.cast(CLUSTERS_SCHEMA))
        if pairs is not None:
            atomic_write_table(self.cluster_pairs_path, pairs.cast(CLUSTER_PAIRS_SCHEMA))

    def read_labels(self) -> pa.Table:
        """The whole history of what the user said (oldest first); empty before the first label."""
        table = read_table_file(self.labels_path, None)
        return _upgrade_labels(table) if table.num_rows else LABELS_SCHEMA.empty_table()

    def append_labels(self, rows: pa.Table) -> pa.Table:
        """Add one action's rows to the history; the file before it is kept as a generation.

        Call under `lock()`. Returns the new history.
        """
        history = pa.concat_tables([self.read_labels(), rows.cast(LABELS_SCHEMA)])
        if self.labels_path.exists():
            self.label_generations_dir.mkdir(exist_ok=True)
            action = int(max(history["action"].to_pylist(), default=0))
            keep = self.label_generations_dir / f"labels-{action:09d}.parquet"
            if not keep.exists():
                os.link(self.labels_path, keep)  # the old file itself: no copy, no partial file
            for old in sorted(self.label_generations_dir.glob("labels-*.parquet"))[:-LABEL_GENERATIONS]:
                old.unlink()
        atomic_write_table(self.labels_path, history)
        return history

    def purge_labels(self, forgotten: Callable[[pa.Table], pa.Array]) -> int:
        """Remove for good the rows `forgotten` marks, from the history and from every kept
        generation (`facebatch forget`: the one write that takes rows out). Call under `lock()`.
        Returns the rows removed from the history."""
        removed = 0
        for path in [self.labels_path, *sorted(self.label_generations_dir.glob("labels-*.parquet"))]:
            if not path.exists():
                continue
            table = read_table_file(path, None)
            table = _upgrade_labels(table) if table.num_rows else LABELS_SCHEMA.empty_table()
            gone = forgotten(table)
            count = pc.sum(gone).as_py() or 0
            if count:
                # Renamed over the path: a generation hard-linked to this file keeps its own copy
                # until its turn in this loop.
                atomic_write_table(path, table.filter(pc.invert(gone)))
            if path == self.labels_path:
                removed = count
        return removed

    @property
    def forgotten_path(self) -> Path:
        return self.root / "forgotten.parquet"

    @property
    def forgetting_path(self) -> Path:
        """What a `forget` under way is forgetting (faces and names): there only until it is done."""
        return self.root / "forgetting.json"

    def read_forgotten(self) -> pa.Table:
        return read_table_file(self.forgotten_path, FORGOTTEN_SCHEMA)

    def add_forgotten(self, rows: pa.Table) -> None:
        """Record forgotten faces (tombstones). Call under `lock()`."""
        atomic_write_table(self.forgotten_path, pa.concat_tables([self.read_forgotten(), rows.cast(FORGOTTEN_SCHEMA)]))

    def drop_faces(self, face_ids: set[str]) -> int:
        """Take these faces' rows out of the faces parts (every row of them). Call under `lock()`.
        Returns the parts rewritten."""
        faces = self.read_table("faces", ["face_id"], with_part=True)
        keep = ~np.isin(np.asarray(faces["face_id"].to_pylist(), dtype=object), list(face_ids))
        return self._rewrite_parts("faces", faces, keep, {})

    def shard_stats(self) -> list[dict[str, Any]]:
        return [
            json.loads((self.shards_dir / f"part-{n:06d}.json").read_text())
            for n in sorted(self.part_numbers(self.shards_dir))
        ]

    # --- reconcile -------------------------------------------------------------------------

    def reconcile(self) -> int:
        """Make the tables hold each path once and each live face once; return parts rewritten.

        The latest row of a path wins. A photo's faces are those of the latest part that detected
        faces in it (a re-detection with other settings replaces them; a crash can't double them),
        none when its latest row says `no_faces`, and none once no live path has that content.
        Face rows follow their photo when the file moved.
        """
        photos = self.read_table("photos", ["photo_id", "path", "status"], with_part=True)
        latest_row = _last_index_by_key(photos.column("path").to_pylist())
        photo_keep = np.zeros(photos.num_rows, bool)
        photo_keep[list(latest_row.values())] = True

        photo_ids = photos.column("photo_id").to_pylist()
        statuses = photos.column("status").to_pylist()
        live_paths: dict[str, set[str]] = {}  # photo_id with faces -> its live paths
        for path, i in latest_row.items():
            if statuses[i] == STATUS_OK and photo_ids[i] is not None:
                live_paths.setdefault(photo_ids[i], set()).add(path)

        faces = self.read_table("faces", ["face_id", "photo_id", "path"], with_part=True)
        face_photo = faces.column("photo_id").to_pylist()
        face_path = faces.column("path").to_pylist()
        face_part = faces.column("part").to_numpy()
        detected_in = {photo_id: int(part) for photo_id, part in zip(face_photo, face_part)}  # latest part wins
        face_keep = np.zeros(faces.num_rows, bool)
        new_paths: dict[int, str] = {}
        for i in _last_index_by_key(faces.column("face_id").to_pylist()).values():
            paths = live_paths.get(face_photo[i])
            if paths and face_part[i] == detected_in[face_photo[i]]:
                face_keep[i] = True
                if face_path[i] not in paths:
                    new_paths[i] = min(paths)

        rewritten = self._rewrite_parts("photos", photos, photo_keep, {})
        rewritten += self._rewrite_parts("faces", faces, face_keep, new_paths)
        return rewritten

    def _rewrite_parts(self, table: str, index: pa.Table, keep: np.ndarray, new_paths: dict[int, str]) -> int:
        """Rewrite each part that loses rows or whose rows change path; delete parts left empty."""
        parts = index.column("part").to_numpy()
        touched = set(parts[~keep].tolist()) | {int(parts[i]) for i in new_paths}
        for number in sorted(touched):
            rows = np.flatnonzero(parts == number)
            path = self.root / table / f"part-{number:06d}.parquet"
            part = self.read_part(table, number)
            if new_paths:
                part = part.set_column(
                    part.schema.get_field_index("path"),
                    "path",
                    pa.array([new_paths.get(int(i), p) for i, p in zip(rows, part.column("path").to_pylist())]),
                )
            part = part.filter(pa.array(keep[rows]))
            if part.num_rows == 0:
                path.unlink()
            else:
                atomic_write_table(path, part, pq.read_schema(path).metadata)
        return len(touched)


def _upgrade_labels(table: pa.Table) -> pa.Table:
    """A labels table from before the history (face_id, kind, value, source, run, created_at):
    every row active, one action per moment it was written."""
    if "action" in table.column_names:
        return table.cast(LABELS_SCHEMA)
    created = table["created_at"].to_pylist()
    order = {t: i + 1 for i, t in enumerate(sorted(set(created)))}
    n = table.num_rows
    return pa.table(
        {
            "action": pa.array([order[t] for t in created], pa.int64()),
            "face_id": table["face_id"],
            "kind": table["kind"],
            "value": table["value"],
            "active": pa.array([True] * n, pa.bool_()),
            "source": table["source"],
            "run": table["run"],
            "created_at": table["created_at"],
            "undoes": pa.nulls(n, pa.int64()),
        }
    ).cast(LABELS_SCHEMA)


def _of_the_model(faces: pa.Table, model: LibraryModel) -> pa.ChunkedArray:
    """Which rows' embeddings are the library model's (whatever runtime made them): the few
    distinct tags are compared, not every row."""
    from facebatch.models.embedding import same_weights

    fresh = [m for m in pc.unique(faces["model"]).to_pylist() if same_weights(m, model.tag)]
    return pc.is_in(faces["model"], pa.array(fresh, pa.string()))


def _last_index_by_key(keys: list[Any]) -> dict[Any, int]:
    """Row index of the last occurrence of each key (rows are in part order: last is latest)."""
    return {key: i for i, key in enumerate(keys)}
