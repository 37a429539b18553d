"""Tag export: per photo, three formats, filters; where it writes (files, stdout, links, devices,
pipes) without replacing what it shouldn't; one-line errors."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import LIBRARY_MODEL, add_photos, person_centres, run
from facebatch.errors import FacebatchError
from facebatch.exports.tags import ExportSettings, export_tags
from facebatch.people.actions import ignore_cluster, label_cluster, label_faces, reject_faces
from facebatch.people.clustering import cluster_library, read_assignments
from facebatch.people.grouping import GroupingSettings
from facebatch.store import Library


@pytest.fixture
def lib(tmp_path) -> Library:
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    centres = dict(zip(["ann", "bob", "dan"], person_centres(3, seed=3)))
    add_photos(library, {"ann": 4, "bob": 3, "dan": 3}, centres, "a")
    cluster_library(library, GroupingSettings())
    ids = read_assignments(library)
    label_cluster(library, ids["f-ann-a-0"], "Ann")
    reject_faces(library, ["f-ann-a-3"], "Ann")
    label_faces(library, ["f-bob-a-0"], "Bob")
    ignore_cluster(library, ids["f-dan-a-0"])
    return library


def faces_of(document: dict) -> dict[str, dict]:
    return {face["face_id"]: {**face, "path": photo["path"]} for photo in document["photos"] for face in photo["faces"]}


def export(lib: Library, *args: object):
    return run("--library", lib.root, "export", *args)


def test_json_has_every_photo_with_its_tagged_faces(lib, tmp_path):
    out = tmp_path / "tags.json"
    result = export(lib, out)
    assert (result.exit_code, result.output) == (0, f"10 photos, 10 faces (6 with a person) -> {out}\n")
    document = json.loads(out.read_text())
    photo = document["photos"][0]
    assert set(photo) == {"path", "photo_id", "kind", "width", "height", "faces"} and photo["kind"] == "photo"
    assert (photo["path"], photo["width"], photo["height"]) == ("/photos/a/ann/0.jpg", 200, 100)
    faces = faces_of(document)
    ann = faces["f-ann-a-0"]
    assert ann["box"] == [20.0, 10.0, 60.0, 50.0] and ann["box_relative"] == [0.1, 0.1, 0.3, 0.5]
    assert (ann["person"], ann["status"], ann["confidence"]) == ("Ann", "confirmed", 1.0)
    assert isinstance(ann["cluster_id"], int)
    assert (faces["f-ann-a-3"]["person"], faces["f-ann-a-3"]["status"]) == (None, "unknown")  # "not Ann"
    assert faces["f-ann-a-3"]["confidence"] is None  # nobody named: no confidence, not 0.0
    bob = faces["f-bob-a-1"]
    assert (bob["person"], bob["status"]) == ("Bob", "suggested") and 0.8 <= bob["confidence"] <= 1
    assert all(faces[f"f-dan-a-{k}"]["person"] is None for k in range(3))  # ignored cluster


def test_jsonl_is_one_photo_per_line_and_filters_apply(lib, tmp_path):
    out = tmp_path / "tags.jsonl"
    assert export(lib, out, "--only-named").exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6 and all(f["person"] for photo in lines for f in photo["faces"])
    assert export(lib, out, "--only-named", "--min-confidence", "0.999999").exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(f["status"] == "confirmed" for photo in lines for f in photo["faces"])


def test_parquet_is_one_row_per_face(lib, tmp_path):
    out = tmp_path / "tags.parquet"
    assert export(lib, out).exit_code == 0
    table = pq.read_table(out)
    assert table.num_rows == 10
    assert table.column_names == ["path", "photo_id", "kind", "width", "height", "face_id", "box", "box_relative",
                                  "person", "status", "confidence", "cluster_id", "video_time", "video_span"]
    assert table.column("person").null_count == 4


def test_format_option_beats_the_suffix_and_an_unknown_suffix_needs_it(lib, tmp_path):
    out = tmp_path / "tags.out"
    assert export(lib, out, "--format", "jsonl").exit_code == 0
    assert len(out.read_text().splitlines()) == 10
    result = export(lib, tmp_path / "tags.xml")
    assert (result.exit_code, result.output) == (1, "Error: cannot tell the format of "
                                                    f"'{tmp_path / 'tags.xml'}' from its extension: name it .json, "
                                                    ".jsonl or .parquet, or give --format\n")
    assert not (tmp_path / "tags.xml").exists()


def test_dash_writes_to_standard_output(lib):
    result = export(lib, "-")
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and len(lines) == 10 and json.loads(lines[0])["path"] == "/photos/a/ann/0.jpg"
    assert result.stderr == "10 photos, 10 faces (6 with a person) -> standard output\n"
    document = json.loads(export(lib, "-", "--format", "json").stdout)
    assert len(document["photos"]) == 10


def test_a_symlink_is_followed_not_replaced(lib, tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert export(lib, link).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(json.loads(target.read_text())["photos"]) == 10


def test_a_named_pipe_is_written_to_not_replaced(lib, tmp_path):
    fifo = tmp_path / "tags.jsonl"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert export(lib, fifo).exit_code == 0
    reader.join(10)
    assert len(received[0].decode().splitlines()) == 10
    assert fifo.is_fifo()


def test_a_device_is_written_to_not_replaced(lib):
    result = export(lib, "/dev/null", "--format", "jsonl")
    assert result.exit_code == 0 and Path("/dev/null").is_char_device()
    if Path("/dev/full").exists():
        full = export(lib, "/dev/full", "--format", "jsonl")
        assert full.exit_code == 1 and full.output.startswith("Error: cannot write /dev/full: No space left on device")
        assert Path("/dev/full").is_char_device()


def test_a_missing_folder_is_one_line_and_never_created(lib, tmp_path):
    result = export(lib, tmp_path / "nope" / "tags.json")
    assert (result.exit_code, result.output) == (1, f"Error: folder {tmp_path / 'nope'} does not exist "
                                                    f"(for {tmp_path / 'nope' / 'tags.json'})\n")
    assert not (tmp_path / "nope").exists()


def test_files_follow_the_umask(lib, tmp_path):
    old = os.umask(0o077)
    try:
        assert export(lib, tmp_path / "private.json").exit_code == 0
    finally:
        os.umask(old)
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def test_a_failed_export_leaves_the_old_file_and_no_temp(lib, tmp_path, monkeypatch):
    out = tmp_path / "tags.json"
    out.write_text("old")

    def boom(records):
        yield '{"photos": ['
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("facebatch.exports.tags._json_document", boom)
    with pytest.raises(FacebatchError, match="cannot write .*tags.json: No space left on device"):
        export_tags(lib, ExportSettings(output=str(out)))
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tags")] == []


def test_cli_bad_export_options_are_one_line(lib, tmp_path):
    result = export(lib, tmp_path / "t.json", "--min-confidence", "2")
    assert (result.exit_code, result.output) == (1, "Error: --min-confidence must be between 0 and 1, got 2.0\n")
    assert not (tmp_path / "t.json").exists()
    result = export(lib, tmp_path / "t.json", "--format", "xml")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: Invalid value for '--format': 'xml' is not one of")


def test_cli_export_into_a_folder_is_one_line(lib, tmp_path):
    result = export(lib, tmp_path, "--format", "json")
    assert (result.exit_code, result.output) == (1, f"Error: {tmp_path} is a folder: give a file name\n")


def test_cli_export_before_cluster_and_without_library(tmp_path):
    result = run("--library", tmp_path / "nolib", "export", tmp_path / "t.json")
    assert result.exit_code == 2 and result.output.startswith(f"Error: no library at {tmp_path / 'nolib'}: ")
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    result = run("--library", library.root, "export", tmp_path / "t.json")
    assert (result.exit_code, result.output) == (2, "Error: no clusters yet: run `facebatch cluster` first\n")
    assert not Path(tmp_path / "t.json").exists()
