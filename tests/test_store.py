"""The library folder: atomic parts, resume clean-up, reconcile, the writer lock."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facebatch.errors import FacebatchError
from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA
from facebatch.store import Library, LibraryModel

from conftest import LIBRARY_MODEL, MODEL


def photos(*rows: tuple[str, str, str]) -> pa.Table:
    """(photo_id, path, status) rows with plausible other columns."""
    now = datetime.now(timezone.utc)
    return pa.Table.from_pylist(
        [
            {"photo_id": pid, "path": path, "size_bytes": 10, "mtime": 1, "width": 100, "height": 80,
             "n_faces": 1 if status == "ok" else 0, "status": status, "scanned_at": now}
            for pid, path, status in rows
        ],
        PHOTOS_SCHEMA,
    )


def faces(*rows: tuple[str, str, str]) -> pa.Table:
    """(face_id, photo_id, path) rows with a random unit embedding."""
    rng = np.random.default_rng(0)
    table = {name: [] for name in FACES_SCHEMA.names}
    for face_id, photo_id, path in rows:
        vector = rng.normal(size=512).astype(np.float32)
        table["face_id"].append(face_id)
        table["photo_id"].append(photo_id)
        table["path"].append(path)
        table["face_index"].append(0)
        table["box"].append([1.0, 2.0, 30.0, 40.0])
        table["score"].append(0.99)
        table["landmarks"].append([5.0] * 10)
        table["embedding"].append(vector / np.linalg.norm(vector))
        table["model"].append(MODEL)
        table["rotation"].append(None)
        table["quality"].append(None)
        table["video_time"].append(None)
        table["video_span"].append(None)
    return pa.table(table).cast(FACES_SCHEMA)


@pytest.fixture
def library(tmp_path) -> Library:
    lib = Library(tmp_path / "lib")
    lib.create(LIBRARY_MODEL)
    return lib


def write(lib: Library, photo_rows, face_rows=()) -> int:
    return lib.write_shard(photos(*photo_rows), faces(*face_rows), {"kind": "test"}, MODEL)


def test_shards_are_readable_by_pandas_as_datasets(library):
    write(library, [("p1", "/a.jpg", "ok")], [("f1", "p1", "/a.jpg")])
    write(library, [("p2", "/b.jpg", "no_faces")])
    assert sorted(pd.read_parquet(library.photos_dir)["path"]) == ["/a.jpg", "/b.jpg"]
    frame = pd.read_parquet(library.faces_dir)
    assert list(frame["face_id"]) == ["f1"]
    assert len(frame["embedding"][0]) == 512
    assert [s["part"] for s in library.shard_stats()] == ["part-000001", "part-000002"]


def test_parts_without_stats_are_removed_on_resume(library):
    write(library, [("p1", "/a.jpg", "ok")], [("f1", "p1", "/a.jpg")])
    number = write(library, [("p2", "/b.jpg", "ok")], [("f2", "p2", "/b.jpg")])
    (library.shards_dir / f"part-{number:06d}.json").unlink()  # killed before the stats file
    (library.faces_dir / ".part-000009.parquet.abc.tmp").write_bytes(b"half")
    assert library.remove_unfinished_parts() == 2
    assert library.read_photos()["path"].to_pylist() == ["/a.jpg"]
    assert library.read_faces()["face_id"].to_pylist() == ["f1"]
    assert not list(library.faces_dir.glob(".*"))


def test_reconcile_keeps_the_latest_row_of_a_changed_photo(library):
    write(library, [("old", "/a.jpg", "ok"), ("p2", "/b.jpg", "ok")], [("f-old", "old", "/a.jpg"), ("f2", "p2", "/b.jpg")])
    write(library, [("new", "/a.jpg", "ok")], [("f-new", "new", "/a.jpg")])
    assert library.reconcile() == 2
    assert sorted(library.read_photos()["photo_id"].to_pylist()) == ["new", "p2"]
    assert sorted(library.read_faces()["face_id"].to_pylist()) == ["f-new", "f2"]
    assert library.reconcile() == 0  # idempotent


def test_reconcile_drops_faces_of_gone_photos_and_keeps_the_gone_row(library):
    write(library, [("p1", "/a.jpg", "ok")], [("f1", "p1", "/a.jpg")])
    write(library, [("p1", "/a.jpg", "gone")])
    library.reconcile()
    rows = library.read_photos().to_pylist()
    assert [(r["path"], r["status"]) for r in rows] == [("/a.jpg", "gone")]
    assert library.read_faces().num_rows == 0
    assert not (library.faces_dir / "part-000001.parquet").exists()  # emptied part deleted


def test_reconcile_moves_faces_with_their_photo(library):
    write(library, [("p1", "/old/a.jpg", "ok")], [("f1", "p1", "/old/a.jpg")])
    write(library, [("p1", "/new/a.jpg", "ok"), ("p1", "/old/a.jpg", "gone")])
    library.reconcile()
    assert library.read_faces()["path"].to_pylist() == ["/new/a.jpg"]
    assert library.read_faces()["face_id"].to_pylist() == ["f1"]


def test_reconcile_removes_duplicate_face_ids_left_by_a_crash(library):
    write(library, [("p1", "/a.jpg", "ok")], [("f1", "p1", "/a.jpg")])
    write(library, [("p1", "/a.jpg", "ok")], [("f1", "p1", "/a.jpg")])
    library.reconcile()
    assert library.read_faces()["face_id"].to_pylist() == ["f1"]
    assert library.read_photos().num_rows == 1


def test_a_new_detection_of_the_same_content_replaces_its_faces(library):
    write(library, [("p1", "/a.jpg", "ok")], [("f1", "p1", "/a.jpg"), ("f2", "p1", "/a.jpg")])
    write(library, [("p1", "/a.jpg", "ok")], [("f3", "p1", "/a.jpg")])  # --force with other settings
    library.reconcile()
    assert library.read_faces()["face_id"].to_pylist() == ["f3"]
    write(library, [("p1", "/a.jpg", "no_faces")])  # and once more, finding nothing
    library.reconcile()
    assert library.read_faces().num_rows == 0


def test_a_second_writer_is_refused_with_one_line(library):
    with library.lock():
        with pytest.raises(FacebatchError, match=r"^library .* is in use by process \d+; wait for it to finish$"):
            with library.lock():
                pass
    with library.lock():  # released
        pass


def test_a_model_change_is_recorded_and_leaves_the_old_faces_pending_until_embedded_again(library):
    write(library, [("p1", "/a.jpg", "ok")], [("f1", "p1", "/a.jpg")])
    assert library.read_faces(["face_id"]).num_rows == 1
    new = LibraryModel("sface[sface@fb143eea0783;mean@0123456789ab]/onnx-int8", "sface", "casia-webface", chosen=True)
    assert library.create(new) == MODEL  # the tag the faces are to be embedded again from
    assert library.model() == new and library.create(new) is None
    assert library.read_faces(["face_id"]).num_rows == 0  # another model's vectors: not comparable
    assert library.read_faces(["face_id"], pending=True).num_rows > 0
    assert library.pending_photos() == {"p1"}  # export-xmp leaves its sidecar alone until it is embedded again


def test_empty_library_reads_as_empty_tables(tmp_path):
    lib = Library(tmp_path / "none")
    assert lib.read_photos().schema == PHOTOS_SCHEMA
    assert lib.read_faces(["face_id"]).num_rows == 0


def test_photos_are_shown_relative_to_the_outermost_scanned_folder(tmp_path):
    from facebatch.cli import _shown_path

    lib = Library(tmp_path / "lib")
    lib.create(LIBRARY_MODEL)
    lib.add_roots(["/photos/family/2019", "/photos/family"])  # the inner folder scanned again on its own
    roots = lib.scanned_roots()
    assert _shown_path("/photos/family/2019/1.jpg", roots) == "2019/1.jpg"
    assert _shown_path("/photos/family/1.jpg", roots) == "1.jpg"
    assert _shown_path("/elsewhere/1.jpg", roots) == "/elsewhere/1.jpg"


def test_face_quality_is_stored_when_written_and_computed_for_parts_written_before(tmp_path):
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    library.write_shard(photos(("a", "/a.jpg", "ok")), faces(("fa", "a", "/a.jpg")), {"kind": "test"}, MODEL)
    path = library.part_path("faces", 1)
    assert pq.read_table(path)["quality"].to_pylist() == [pytest.approx(0.45)]  # 29 px: 20 px counts 0, 40 px 1
    old = pq.read_table(path).drop_columns(["quality"])  # a part written before quality was recorded
    pq.write_table(old, path)
    assert library.read_faces(["face_id", "quality"])["quality"].to_pylist() == [pytest.approx(0.45)]
