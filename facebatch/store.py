"""The library folder: Parquet tables written shard by shard, atomically, readable by any Parquet tool.

Layout (pandas, DuckDB and PyArrow read `photos/` and `faces/` as datasets):

    LIBRARY/library.json             the model the embeddings come from
    LIBRARY/photos/part-000042.parquet
    LIBRARY/faces/part-000042.parquet
    LIBRARY/shards/part-000042.json  per-shard stats, written last: the shard is done
    LIBRARY/.lock                    held by the scan that is writing

A part whose stats file is missing was cut short by a kill and is deleted by the next scan. Parts
are numbered in the order they were written, so when a path appears in two parts (a changed photo,
a retried error, a removed photo) the later part wins; `reconcile` rewrites the older part.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facebatch.errors import FacebatchError
from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA, STATUS_OK

PART_NAME = re.compile(r"^part-(\d{6,})\.(parquet|json)$")
TABLE_SCHEMAS = {"photos": PHOTOS_SCHEMA, "faces": FACES_SCHEMA}


@contextmanager
def atomic_file(path: Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """A file that appears at `path` whole or not at all: a hidden temp file beside it, fsync, rename.

    The temp name starts with '.', which Parquet dataset readers skip; 0644 like any new file
    (mkstemp makes 0600, but caches and tables are shared by workers and users).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_table(path: Path, table: pa.Table, metadata: dict[str, str] | None = None) -> None:
    """Parquet through a temp file. The temp name starts with '.', which Parquet dataset readers skip."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_file(path) as f:  # straight into the temp file: no second copy of a big table in memory
        pq.write_table(table, f, compression="zstd")


def read_table_file(path: Path, schema: pa.Schema) -> pa.Table:
    """One Parquet file of the library's own (clusters, labels); empty when it isn't there yet."""
    if not path.exists():
        return schema.empty_table()
    try:
        return pq.read_table(path, schema=schema)
    except (OSError, pa.ArrowException) as exc:
        raise FacebatchError(f"cannot read {path}: {exc}") from exc


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

    def create(self, model: str) -> None:
        """Make the folders and record the embedding model; an existing library must match it."""
        info = self.read_info()
        if info is not None and info.get("model") != model:
            raise FacebatchError(
                f"library {self.root} holds embeddings from {info.get('model')}, this scan uses {model}: "
                "embeddings of two models can't be compared; use another --library"
            )
        for folder in (self.photos_dir, self.faces_dir, self.shards_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if info is None:
            atomic_write_json(self.info_path, {"format": 1, "model": model})

    def read_info(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.info_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FacebatchError(f"cannot read {self.info_path}: {exc}") from exc

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time. flock is released by the kernel when a killed scan dies."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.root / ".lock", "a+")
        except OSError as exc:
            raise FacebatchError(f"cannot write to library {self.root}: {exc.strerror}") from exc
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise FacebatchError(
                    f"library {self.root} is in use by {holder}; wait for it to finish"
                ) from None
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
        atomic_write_table(self.faces_dir / f"{name}.parquet", faces.cast(FACES_SCHEMA), metadata)
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
        folder = self.root / table
        pieces = []
        for number in sorted(self.part_numbers(folder)):
            piece = pq.read_table(folder / f"part-{number:06d}.parquet", columns=columns, schema=schema)
            if with_part:
                piece = piece.append_column("part", pa.array(np.full(piece.num_rows, number, np.int64)))
            pieces.append(piece)
        if not pieces:
            empty = schema if columns is None else pa.schema([schema.field(c) for c in columns])
            if with_part:
                empty = empty.append(pa.field("part", pa.int64()))
            return empty.empty_table()
        return pa.concat_tables(pieces)

    def read_photos(self) -> pa.Table:
        return self.read_table("photos")

    def read_faces(self, columns: list[str] | None = None) -> pa.Table:
        return self.read_table("faces", columns)

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
            part = pq.read_table(path, schema=TABLE_SCHEMAS[table])
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


def _last_index_by_key(keys: list[Any]) -> dict[Any, int]:
    """Row index of the last occurrence of each key (rows are in part order: last is latest)."""
    return {key: i for i, key in enumerate(keys)}
