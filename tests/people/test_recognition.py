"""`facebatch identify`: real photos against the people named in a real library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SAMPLE_DATA, run
from facebatch.people.actions import label_faces
from facebatch.store import Library


def run_in(library: Path, *args: str):
    return run("--library", library, *args)


@pytest.fixture(scope="module")
def named_library(tmp_path_factory) -> Library:
    """Three photos of Obama and one of Biden scanned, every main face named."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("barack_obama/1.jpg", "barack_obama/2.jpg", "barack_obama/3.jpg", "joe_biden/1.jpg"):
        (folder / name.replace("/", "-")).write_bytes((SAMPLE_DATA / "people" / name).read_bytes())
    library = Library(tmp_path_factory.mktemp("lib") / "lib")
    result = run_in(library.root, "scan", str(folder), "--workers", "1", "-q")
    assert result.exit_code == 0, result.output
    for face in library.read_faces(["face_id", "path", "face_index"]).to_pylist():
        if face["face_index"] == 0:
            label_faces(library, [face["face_id"]], "Barack Obama" if "obama" in face["path"] else "Joe Biden")
    return library


def test_a_new_photo_of_a_named_person_is_recognised(named_library):
    photo = SAMPLE_DATA / "people/joe_biden/2.jpg"
    result = run_in(named_library.root, "identify", str(photo), "--json")
    assert result.exit_code == 0, result.output
    line = json.loads(result.output)
    assert (line["photo"], line["error"]) == (str(photo), None)
    faces = line["faces"]
    assert faces[0]["person"] == "Joe Biden"
    assert 0.8 <= faces[0]["confidence"] <= 1
    assert [c["person"] for c in faces[0]["candidates"]] == ["Joe Biden", "Barack Obama"]


def test_a_stranger_is_unknown(named_library):
    photo = SAMPLE_DATA / "people/grace_hopper/1.jpg"
    result = run_in(named_library.root, "identify", str(photo))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{photo}: face 0 at (")
    assert ": unknown (nearest " in result.output and "< 0.80)" in result.output
    assert result.output.count("\n") == 1


def test_many_photos_and_folders_in_one_call(named_library, tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("people/joe_biden/2.jpg", "people/barack_obama/4.jpg", "no_faces/coffee.png"):
        (folder / name.replace("/", "-")).write_bytes((SAMPLE_DATA / name).read_bytes())
    result = run_in(named_library.root, "identify", str(folder), "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [Path(line["photo"]).name for line in lines] == ["no_faces-coffee.png", "people-barack_obama-4.jpg",
                                                            "people-joe_biden-2.jpg"]
    assert (lines[0]["faces"], lines[0]["error"]) == ([], None)  # read, no face: not an error
    assert lines[1]["faces"][0]["person"] == "Barack Obama" and lines[2]["faces"][0]["person"] == "Joe Biden"


def test_identify_errors_are_one_line(named_library, tmp_path):
    coffee = SAMPLE_DATA / "no_faces/coffee.png"
    no_face = run_in(named_library.root, "identify", str(coffee))
    assert (no_face.exit_code, no_face.output) == (0, f"{coffee}: no face found\n")
    empty = Library(tmp_path / "empty")
    empty.create(named_library.model())
    nobody = run_in(empty.root, "identify", str(SAMPLE_DATA / "people/barack_obama/4.jpg"))
    assert (nobody.exit_code, nobody.output) == (
        1, "Error: nobody is named yet: `facebatch label cluster N NAME` names a cluster\n")
    missing = run_in(named_library.root, "identify", str(tmp_path / "nope.jpg"))
    assert (missing.exit_code, missing.output) == (2, f"file not found: {tmp_path / 'nope.jpg'}\n")  # the path once
    # One bad path among good ones: a line for it, the others still identified, in the order given.
    photo = SAMPLE_DATA / "people/barack_obama/4.jpg"
    some = run_in(named_library.root, "identify", str(tmp_path / "nope.jpg"), str(photo))
    lines = some.output.splitlines()
    assert some.exit_code == 0 and lines[0] == f"file not found: {tmp_path / 'nope.jpg'}" and ": Barack Obama" in lines[1]
