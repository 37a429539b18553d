"""Tag export: per photo, three formats, filters, atomic writes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run
from facebatch.people.clustering import ClusterSettings, cluster_library, read_assignments
from facebatch.errors import FacebatchError
from facebatch.exports.tags import ExportSettings, export_tags
from facebatch.people.labels import ignore_cluster, label_cluster, label_face
from facebatch.store import Library
from conftest import MODEL, add_photos, person_centres


@pytest.fixture
def lib(tmp_path) -> Library:
    library = Library(tmp_path / "lib")
    library.create(MODEL)
    centres = dict(zip(["ann", "bob", "dan"], person_centres(3, seed=3)))
    add_photos(library, {"ann": 4, "bob": 3, "dan": 3}, centres, "a")
    cluster_library(library, ClusterSettings(min_cluster_size=3))
    ids = read_assignments(library)
    label_cluster(library, ids["f-ann-a-0"], "Ann")
    label_face(library, "f-ann-a-3", "Ann", negative=True)
    label_face(library, "f-bob-a-0", "Bob")
    ignore_cluster(library, ids["f-dan-a-0"])
    return library


def faces_of(document: dict) -> dict[str, dict]:
    return {face["face_id"]: {**face, "path": photo["path"]} for photo in document["photos"] for face in photo["faces"]}


def test_json_has_every_photo_with_its_tagged_faces(lib, tmp_path):
    out = tmp_path / "tags.json"
    result = run("--library", str(lib.root), "export", str(out))
    assert (result.exit_code, result.output) == (0, f"10 photos, 10 faces (6 with a person) -> {out}\n")
    document = json.loads(out.read_text())
    photo = document["photos"][0]
    assert set(photo) == {"path", "photo_id", "width", "height", "faces"}
    assert (photo["path"], photo["width"], photo["height"]) == ("/photos/a/ann/0.jpg", 200, 100)
    faces = faces_of(document)
    ann = faces["f-ann-a-0"]
    assert ann["box"] == [20.0, 10.0, 60.0, 50.0] and ann["box_relative"] == [0.1, 0.1, 0.3, 0.5]
    assert (ann["person"], ann["status"], ann["confidence"]) == ("Ann", "confirmed", 1.0)
    assert isinstance(ann["cluster_id"], int)
    assert (faces["f-ann-a-3"]["person"], faces["f-ann-a-3"]["status"]) == (None, "unknown")  # "not Ann"
    bob = faces["f-bob-a-1"]
    assert (bob["person"], bob["status"]) == ("Bob", "suggested") and 0 < bob["confidence"] <= 1
    assert all(faces[f"f-dan-a-{k}"]["person"] is None for k in range(3))  # ignored cluster


def test_jsonl_is_one_photo_per_line_and_filters_apply(lib, tmp_path):
    out = tmp_path / "tags.jsonl"
    assert run("--library", str(lib.root), "export", str(out), "--only-named").exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6 and all(f["person"] for photo in lines for f in photo["faces"])
    assert run("--library", str(lib.root), "export", str(out), "--only-named", "--min-confidence", "0.999").exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(f["status"] == "confirmed" or f["confidence"] >= 1.0 for photo in lines for f in photo["faces"])


def test_parquet_is_one_row_per_face(lib, tmp_path):
    out = tmp_path / "tags.parquet"
    assert run("--library", str(lib.root), "export", str(out)).exit_code == 0
    table = pq.read_table(out)
    assert table.num_rows == 10
    assert table.column_names == ["path", "photo_id", "width", "height", "face_id", "box", "box_relative", "person",
                                  "status", "confidence", "cluster_id"]
    assert table.column("person").null_count == 4


def test_format_option_beats_the_suffix(lib, tmp_path):
    out = tmp_path / "tags.out"
    assert run("--library", str(lib.root), "export", str(out), "--format", "jsonl").exit_code == 0
    assert len(out.read_text().splitlines()) == 10


def test_a_failed_export_leaves_the_old_file_and_no_temp(lib, tmp_path, monkeypatch):
    out = tmp_path / "tags.json"
    out.write_text("old")

    def boom(records):
        yield '{"photos": ['
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("facebatch.exports.tags._json_document", boom)
    with pytest.raises(FacebatchError, match="cannot write .*tags.json: No space left on device"):
        export_tags(lib, ExportSettings(output=out))
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tags")] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-confidence", "2"], "--min-confidence must be between 0 and 1, got 2.0"),
    ],
)
def test_cli_bad_export_options_are_one_line(lib, tmp_path, args, message):
    result = run("--library", str(lib.root), "export", str(tmp_path / "t.json"), *args)
    assert (result.exit_code, result.output) == (1, f"Error: {message}\n")
    assert not (tmp_path / "t.json").exists()


def test_cli_export_into_a_folder_is_one_line(lib, tmp_path):
    result = run("--library", str(lib.root), "export", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.output  # click's own check


def test_cli_export_before_cluster_and_without_library(tmp_path):
    result = run("--library", str(tmp_path / "nolib"), "export", str(tmp_path / "t.json"))
    assert result.output == f"Error: no library at {tmp_path / 'nolib'}: run `facebatch scan FOLDER` first\n"
    library = Library(tmp_path / "lib")
    library.create(MODEL)
    result = run("--library", str(library.root), "export", str(tmp_path / "t.json"))
    assert (result.exit_code, result.output) == (1, "Error: no clusters yet: run `facebatch cluster` first\n")
    assert not Path(tmp_path / "t.json").exists()
