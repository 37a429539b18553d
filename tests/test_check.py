"""`facebatch check`: a damaged library is named file by file and mended without deleting anything;
`scan` sets a damaged shard aside by itself; read-only commands name the file and the repair."""

from __future__ import annotations

import pytest

from conftest import LIBRARY_MODEL, SAMPLE_DATA, add_photos, person_centres, run
from facebatch.people.actions import label_faces
from facebatch.people.clustering import cluster_library
from facebatch.people.grouping import GroupingSettings
from facebatch.store import Library


@pytest.fixture
def lib(tmp_path) -> Library:
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    centres = dict(zip(["ann", "bob"], person_centres(2)))
    add_photos(library, {"ann": 4}, centres, "a")
    add_photos(library, {"bob": 4}, centres, "b")
    cluster_library(library, GroupingSettings())
    return library


def cut_in_half(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_whole_library_is_whole(lib):
    result = run("--library", lib.root, "check")
    assert (result.exit_code, result.output) == (0, f"library {lib.root} is whole: 2 parts, 8 photos, 8 faces, "
                                                    "0 label actions\n")


def test_a_part_cut_in_half_is_named_and_set_aside(lib):
    part = lib.faces_dir / "part-000002.parquet"
    cut_in_half(part)
    clusters = run("--library", lib.root, "cluster")
    assert clusters.exit_code == 2 and clusters.output.count("\n") == 1
    assert clusters.output.startswith(f"Error: faces part {part} is damaged (")
    assert clusters.output.endswith("`facebatch check --repair` sets it aside and the next `facebatch scan` scans its "
                                    "photos again\n")
    result = run("--library", lib.root, "check")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0].startswith(f"damaged: {part}: ") and "--repair sets its shard aside" in lines[0]
    assert lines[-1] == f"library {lib.root}: 1 problem; `facebatch check --repair` mends it"
    result = run("--library", lib.root, "check", "--repair")
    assert result.exit_code == 0 and result.output.startswith(f"repaired: {part}: ")
    assert sorted(p.name for p in lib.damaged_dir.iterdir()) == [
        "faces-part-000002.parquet", "photos-part-000002.parquet", "shards-part-000002.json"]
    assert lib.read_faces(["face_id"]).num_rows == 4  # bob's shard is out until the next scan
    assert run("--library", lib.root, "check").exit_code == 0


def test_damaged_labels_come_back_from_the_newest_readable_generation(lib):
    for name in ("Ann", "Anne", "Annie"):
        label_faces(lib, ["f-ann-a-0"], name)
    cut_in_half(lib.labels_path)
    people = run("--library", lib.root, "people")
    assert people.exit_code == 2 and "`facebatch check` says what is damaged" in people.output
    result = run("--library", lib.root, "check", "--repair")
    assert result.exit_code == 0, result.output
    assert f"repaired: {lib.labels_path}: " in result.output
    assert "put back labels-000000003.parquet (up to action 2); labels given after it are lost" in result.output
    from facebatch.people.labels import replay

    assert replay(lib.read_labels()).name_of("f-ann-a-0") == "Anne"  # action 3 (Annie) is lost, 1 and 2 are not
    assert any(p.name.startswith("labels.parquet.") for p in lib.damaged_dir.iterdir())  # kept, not deleted


def test_scan_sets_a_damaged_shard_aside_and_finds_the_same_faces_again(sample_library):
    before = set(sample_library.read_faces(["face_id"])["face_id"].to_pylist())
    parts = sample_library.finished_parts("faces")
    cut_in_half(sample_library.part_path("faces", parts[0]))
    result = run("--library", sample_library.root, "scan", SAMPLE_DATA)
    assert result.exit_code == 0, result.output
    assert f"warning: damaged faces part {sample_library.part_path('faces', parts[0])} moved to " in result.output
    assert set(sample_library.read_faces(["face_id"])["face_id"].to_pylist()) == before  # same ids: names hold
    assert run("--library", sample_library.root, "check").exit_code == 0
