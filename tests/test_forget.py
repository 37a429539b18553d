"""`facebatch forget`: a person taken out of a real library (MTCNN and the default model on
sample_data's photos) leaves no face id and no name in any file of the library or in the
sidecars facebatch wrote, and a re-scan with --force does not bring the faces back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SAMPLE_DATA, run, scan_quietly
from facebatch.forget import _add_tombstones
from facebatch.people.clustering import read_assignments
from facebatch.store import Library

OBAMA = "Barack Obama"


def traces(root: Path, needles: list[str], pattern: str = "*", but: Path | None = None) -> list[str]:
    """Every file under root (matching pattern, but `but`) that holds a needle: in its name, its
    bytes, or (Parquet, whose pages are compressed) any value of its tables."""
    found = []
    for path in sorted(p for p in root.rglob(pattern) if p.is_file() and p != but):
        text = path.name
        if path.suffix == ".parquet":
            text += repr(pq.read_table(path).to_pylist())
        else:
            text += path.read_bytes().decode("latin-1")
        found += [f"{path.relative_to(root)}: {n}" for n in needles if n in text]
    return found


@pytest.fixture
def named(tmp_path) -> tuple[Library, Path]:
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE_DATA / "people", photos)
    library = tmp_path / "lib"
    scan_quietly(library, photos)
    assert run("--library", library, "cluster", "--min-cluster-size", "2").exit_code == 0
    lib = Library(library)
    faces = lib.read_faces(["face_id", "path"])
    person = {f: Path(p).parent.name for f, p in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist())}
    obama = max(set(c for f, c in read_assignments(lib).items() if person[f] == "barack_obama"),
                key=lambda c: sum(1 for f, k in read_assignments(lib).items() if k == c and person[f] == "barack_obama"))
    assert run("--library", library, "label", "cluster", obama, OBAMA).exit_code == 0
    biden = next(f for f, p in person.items() if p == "joe_biden")
    assert run("--library", library, "label", "face", biden, "Joe Biden").exit_code == 0
    for args in (["export-xmp", "--include-suggested"], ["show", "person", OBAMA], ["report", "-q"]):
        result = run("--library", library, *args)
        assert result.exit_code == 0, result.output
    return lib, photos


def test_forget_a_person_leaves_no_trace_and_survives_a_rescan(named):
    lib, photos = named
    faces = lib.read_faces(["face_id", "path"])
    obama_faces = [f for f, p in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist()) if "barack_obama" in p]
    assert len(obama_faces) == 4
    assert traces(lib.root, [OBAMA, *obama_faces]) and traces(photos, [OBAMA], "*.xmp")  # labels, thumbnails, sidecars

    result = run("--library", lib.root, "forget", OBAMA, "--yes")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"forgot {OBAMA}: 4 faces (embeddings and boxes), ")
    assert "regions in 4 sidecars" in lines[0]
    assert f"removed {lib.root / 'report'}: it showed these faces (`facebatch report` writes it again)" in lines
    assert lines[-1] == ("each face is kept as a tombstone (id, photo, path, box) so no re-scan embeds it again; "
                         "`facebatch check` finds anything of them left in the tables or thumbnails")

    assert traces(lib.root, [OBAMA, *obama_faces], but=lib.forgotten_path) == []
    assert traces(lib.root, [OBAMA]) == []  # the tombstones hold no name
    assert set(pq.read_table(lib.forgotten_path).column_names) == {"face_id", "photo_id", "path", "box", "video_span",
                                                                     "forgotten_at"}
    # The sidecars facebatch wrote (the photos' own embedded XMP, another tool's, is never written to).
    assert traces(photos, [OBAMA, *obama_faces], "*.xmp") == []
    assert "Joe Biden" in repr(lib.read_labels().to_pylist())  # the others keep theirs
    assert run("--library", lib.root, "check").output.splitlines()[-1].startswith(f"library {lib.root} is whole")

    scan_quietly(lib.root, photos)  # nothing changed: nothing comes back
    assert run("--library", lib.root, "scan", "-q", "--force", photos).exit_code == 0  # detected again
    assert not set(obama_faces) & set(lib.read_faces(["face_id"], pending=True)["face_id"].to_pylist())
    assert not [p for p in lib.read_faces(["path"])["path"].to_pylist() if "barack_obama" in p]
    assert lib.read_faces(["face_id"]).num_rows == faces.num_rows - 4  # the others were found again
    assert run("--library", lib.root, "check").output.splitlines()[-1].startswith(f"library {lib.root} is whole")


def test_forget_asks_for_yes_and_says_what_it_needs(named):
    lib, _ = named
    before = lib.read_labels()
    result = run("--library", lib.root, "forget", OBAMA)  # no terminal to ask on
    assert (result.exit_code, result.output) == (1, "Error: forget removes for good, with no undo: add --yes to confirm\n")
    assert run("--library", lib.root, "forget", "Nobody", "--yes").output == (
        "Error: nobody is named Nobody: `facebatch people` lists the names\n")
    assert run("--library", lib.root, "forget", "--yes").output == (
        "Error: say what to forget: a NAME, --face FACE_ID or --photo PATH\n")
    assert lib.read_labels().equals(before)


def test_check_finds_a_forget_cut_short_and_repair_finishes_it(named):
    lib, photos = named
    biden = [f for f, p in zip(*(lib.read_faces(["face_id", "path"])[c].to_pylist() for c in ("face_id", "path")))
             if "joe_biden" in p]
    # Killed right after the tombstones: every other trace is still there.
    faces = lib.read_faces(["face_id", "photo_id", "path", "box", "video_span"])
    with lib.lock():
        _add_tombstones(lib, faces.filter(pa.array([f in biden for f in faces["face_id"].to_pylist()])))
    report = run("--library", lib.root, "check").output.splitlines()
    assert any("forgotten faces still have rows (embeddings); --repair finishes forgetting them" in line for line in report)
    assert run("--library", lib.root, "check", "--repair").exit_code == 0
    assert run("--library", lib.root, "check").output.splitlines()[-1].startswith(f"library {lib.root} is whole")
    assert not set(biden) & set(lib.read_faces(["face_id"])["face_id"].to_pylist())
    assert traces(photos, biden, "*.xmp") == []
