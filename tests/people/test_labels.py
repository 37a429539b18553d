"""Labels are facts about faces: they survive re-clustering, new photos and renumbering."""

from __future__ import annotations

import shutil

import pyarrow.compute as pc
import pytest

from conftest import dataset, run
from facebatch.people.clustering import ClusterSettings, cluster_library, read_assignments
from facebatch.errors import FacebatchError
from facebatch.people.labels import (
    build_view,
    clean_name,
    face_tags,
    ignore_cluster,
    label_cluster,
    label_face,
    merge_clusters,
    named_faces,
    people,
    read_labels,
)
from facebatch.store import Library
from conftest import MODEL, add_photos, person_centres, scan_quietly

NAMES = ["ann", "bob", "cat", "dan", "eve", "gus1", "gus2"]


@pytest.fixture
def centres():
    return dict(zip(NAMES, person_centres(len(NAMES), seed=2)))


@pytest.fixture
def lib(tmp_path, centres) -> Library:
    library = Library(tmp_path / "lib")
    library.create(MODEL)
    add_photos(library, {"ann": 6, "bob": 5, "cat": 4, "dan": 4, "gus1": 3, "gus2": 3, "eve": 3}, centres, "a")
    cluster_library(library, ClusterSettings(min_cluster_size=3))
    return library


def cluster_of(library: Library, person: str) -> int:
    ids = [c for f, c in read_assignments(library).items() if f.split("-")[1] == person and c >= 0]
    return max(set(ids), key=ids.count)


def tags_by_face(library: Library) -> dict[str, tuple[str | None, str, float]]:
    tags = face_tags(library)
    return {f: (p, s, float(c)) for f, p, s, c in zip(tags.face_ids, tags.person, tags.status, tags.confidence)}


def test_names_are_cleaned():
    assert clean_name("  Zoë   van der  Berg ") == "Zoë van der Berg"
    assert clean_name("José") == clean_name("Jose\u0301")  # NFC: one spelling
    for bad, message in (("   ", "a name cannot be empty"), ("a\tb\x00", "control characters"),
                         ("x" * 101, "at most 100 characters")):
        with pytest.raises(FacebatchError, match=message):
            clean_name(bad)


def test_every_label_survives_new_photos_and_a_recluster_with_other_parameters(lib, centres):
    ann, bob, cat, dan = (cluster_of(lib, p) for p in ("ann", "bob", "cat", "dan"))
    gus1, gus2 = cluster_of(lib, "gus1"), cluster_of(lib, "gus2")
    assert label_cluster(lib, ann, "Ann Lee") == f"cluster {ann} is Ann Lee: 6 faces"
    assert label_face(lib, "f-ann-a-5", "Ann Lee", negative=True) == "face f-ann-a-5 is not Ann Lee"
    label_cluster(lib, bob, "Böb Ñúñez")
    label_face(lib, "f-bob-a-0", "Robert")  # a face label outranks its cluster's name
    label_face(lib, "f-cat-a-0", "Cat")
    assert merge_clusters(lib, [gus1, gus2]) == f"clusters {gus1}, {gus2} are now cluster {gus1}: 6 faces"
    label_cluster(lib, gus1, "Gus")
    assert ignore_cluster(lib, dan).startswith(f"cluster {dan} ignored: its 4 faces")
    before = read_labels(lib)

    add_photos(lib, {"ann": 3, "bob": 2, "cat": 2, "dan": 2, "gus1": 2, "gus2": 2, "eve": 2}, centres, "b")
    cluster_library(lib, ClusterSettings(min_cluster_size=2, min_samples=2, method="eom"))

    assert read_labels(lib).equals(before)  # clustering never rewrites the facts
    tags = tags_by_face(lib)
    assert tags["f-ann-a-0"] == ("Ann Lee", "confirmed", 1.0)
    assert tags["f-ann-a-5"][0] != "Ann Lee"  # "not Ann Lee" for good, though its cluster is Ann's
    assert tags["f-bob-a-0"][:2] == ("Robert", "confirmed")
    assert tags["f-cat-a-0"][:2] == ("Cat", "confirmed")
    for new_face, person in (("f-ann-b-0", "Ann Lee"), ("f-bob-b-1", "Böb Ñúñez"), ("f-cat-b-0", "Cat"),
                             ("f-gus1-b-0", "Gus"), ("f-gus2-b-1", "Gus")):
        name, status, confidence = tags[new_face]
        assert (name, status) == (person, "suggested") and 0.0 < confidence <= 1.0, new_face
    for face in ("f-dan-a-0", "f-dan-b-0", "f-eve-b-0"):
        assert tags[face][:2] == (None, "unknown")  # ignored: never suggested; eve: nobody named her
    # Numbers: same groups keep theirs; the merge holds after the re-run.
    assert (cluster_of(lib, "ann"), cluster_of(lib, "bob"), cluster_of(lib, "dan")) == (ann, bob, dan)
    assert cluster_of(lib, "gus1") == cluster_of(lib, "gus2") == gus1
    view = build_view(lib)
    assert view.clusters[dan].ignored and view.clusters[gus1].person == "Gus"
    assert not any(info.conflict for info in view.clusters.values())
    with pytest.raises(FacebatchError, match=f"cluster {dan} is ignored: `facebatch ignore cluster {dan} --undo` first"):
        label_cluster(lib, dan, "Dan")
    names, embeddings = named_faces(lib)
    assert sorted(set(names)) == ["Ann Lee", "Böb Ñúñez", "Cat", "Gus", "Robert"]
    assert embeddings.shape == (len(names), 512) and names.count("Ann Lee") == 5
    found = {p.name: (p.confirmed, p.suggested) for p in people(lib)}
    assert found["Ann Lee"] == (5, 3) and found["Gus"] == (6, 4) and "Dan" not in found


def test_two_names_in_one_cluster_are_a_conflict_with_the_fix(lib, centres):
    cat, eve = cluster_of(lib, "cat"), cluster_of(lib, "eve")
    label_cluster(lib, cat, "Cat")
    label_cluster(lib, eve, "Eve")
    line = merge_clusters(lib, [cat, eve])
    assert line == (
        f"clusters {cat}, {eve} are now cluster {cat}: 7 faces\n"
        f"conflict: cluster {cat} holds faces named Cat (4) and Eve (3): shown as Cat; "
        f"`facebatch label cluster {cat} Cat` names them all, `facebatch label face FACE_ID Eve` keeps one face apart"
    )
    cluster_library(lib, ClusterSettings(min_cluster_size=3, min_samples=2))  # the conflict is derived again
    assert build_view(lib).clusters[cat].conflict
    tags = tags_by_face(lib)
    assert tags["f-eve-a-0"] == ("Eve", "confirmed", 1.0)  # never silently renamed
    label_cluster(lib, cat, "Cat")  # the fix the line gave
    assert not build_view(lib).clusters[cat].conflict


def test_a_cluster_renamed_is_named_again_and_new_faces_get_the_new_name(lib, centres):
    ann = cluster_of(lib, "ann")
    label_cluster(lib, ann, "Ann")
    label_cluster(lib, ann, "Anne")
    assert build_view(lib).clusters[ann].person == "Anne"
    assert not build_view(lib).clusters[ann].conflict


def test_nearest_labelled_face_suggests_for_faces_outside_named_clusters(lib, centres):
    label_face(lib, "f-eve-a-0", "Eve")  # one face, not the cluster
    add_photos(lib, {"eve": 1}, centres, "c")  # scanned, not yet clustered
    tags = tags_by_face(lib)
    name, status, confidence = tags["f-eve-c-0"]
    assert (name, status) == ("Eve", "suggested") and 0.0 < confidence < 1.0
    assert tags["f-bob-a-0"][:2] == (None, "unknown")  # far from every labelled face


def test_ignore_undo(lib):
    dan = cluster_of(lib, "dan")
    ignore_cluster(lib, dan)
    assert ignore_cluster(lib, dan) == f"cluster {dan} is already ignored"
    assert ignore_cluster(lib, dan, undo=True) == f"cluster {dan} is no longer ignored"
    assert label_cluster(lib, dan, "Dan") == f"cluster {dan} is Dan: 4 faces"


# --------------------------------------------------------------------------- CLI errors: one line each


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["label", "cluster", "99", "Alice"], "no cluster 99: `facebatch clusters` lists them"),
        (["label", "face", "nope", "Alice"], "no face nope in the library: `facebatch export` lists face ids"),
        (["label", "cluster", "1", "  "], "a name cannot be empty"),
        (["merge", "1"], "merge needs two different cluster numbers, e.g. `facebatch merge 12 31`"),
        (["merge", "1", "99"], "no cluster 99: `facebatch clusters` lists them"),
        (["ignore", "cluster", "99"], "no cluster 99: `facebatch clusters` lists them"),
    ],
)
def test_cli_bad_ids_and_names_are_one_line(lib, args, message):
    before = read_labels(lib)
    result = run("--library", str(lib.root), *args)
    assert (result.exit_code, result.output) == (1, f"Error: {message}\n")
    assert read_labels(lib).equals(before)


def test_cli_labelling_an_ignored_cluster_is_one_line(lib):
    dan = cluster_of(lib, "dan")
    assert run("--library", str(lib.root), "ignore", "cluster", str(dan)).exit_code == 0
    result = run("--library", str(lib.root), "label", "cluster", str(dan), "Dan")
    assert result.exit_code == 1
    assert result.output == f"Error: cluster {dan} is ignored: `facebatch ignore cluster {dan} --undo` first\n"


@pytest.mark.parametrize("args", [["label", "cluster", "1", "A"], ["label", "face", "x", "A"], ["merge", "1", "2"],
                                  ["ignore", "cluster", "1"], ["people"], ["clusters"]])
def test_cli_on_a_never_scanned_library_is_one_line(tmp_path, args):
    result = run("--library", str(tmp_path / "lib"), *args)
    assert result.exit_code == 1
    assert result.output == f"Error: no library at {tmp_path / 'lib'}: run `facebatch scan FOLDER` first\n"
    assert not (tmp_path / "lib").exists()


def test_cli_label_merge_ignore_people(lib):
    ann, bob = cluster_of(lib, "ann"), cluster_of(lib, "bob")
    out = run("--library", str(lib.root), "label", "cluster", str(ann), "Zoë van der Berg").output
    assert out == f"cluster {ann} is Zoë van der Berg: 6 faces\n"
    out = run("--library", str(lib.root), "label", "face", "f-ann-a-1", "--not", "Zoë van der Berg").output
    assert out == "face f-ann-a-1 is not Zoë van der Berg\n"
    assert run("--library", str(lib.root), "label", "face", "f-bob-a-1", "Bob").output == "face f-bob-a-1 is Bob\n"
    out = run("--library", str(lib.root), "people").output
    # One face named Bob makes his cluster Bob's: its other faces are suggested (5 faces each: by name).
    assert out.splitlines() == [
        f"Bob\t1 confirmed, 4 suggested faces\t5 photos\tclusters {bob}",
        f"Zoë van der Berg\t5 confirmed, 0 suggested faces\t5 photos\tclusters {ann}",
        "2 people",
    ]


# --------------------------------------------------------------------------- end to end with real photos


def test_names_flow_to_new_photos_end_to_end(tmp_path):
    """Real scans of faces-dev: name, correct, rule out, ignore; add photos; re-cluster otherwise."""
    faces_dev = dataset("faces-dev")
    photos = tmp_path / "photos"
    held_back = {"barack_obama/fr_knn_test_obama1.jpg", "jacques_chirac/pytopenface_chirac4.jpg"}
    for person in ("barack_obama", "jacques_chirac", "alex_lacamoire"):
        for photo in sorted((faces_dev / person).iterdir()):
            if f"{person}/{photo.name}" not in held_back:
                (photos / person).mkdir(parents=True, exist_ok=True)
                shutil.copy(photo, photos / person / photo.name)
    library = tmp_path / "lib"
    lib = Library(library)
    scan_quietly(library, photos)
    assert run("--library", str(library), "cluster", "--min-cluster-size", "2").exit_code == 0

    faces = lib.read_faces(["face_id", "path"])
    person_of = {f: p.split("/")[-2] for f, p in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist())}

    def majority_cluster(person: str) -> int:
        ids = [c for f, c in read_assignments(lib).items() if person_of.get(f) == person and c >= 0]
        return max(set(ids), key=ids.count)

    obama, chirac, alex = (majority_cluster(p) for p in ("barack_obama", "jacques_chirac", "alex_lacamoire"))
    assert len({obama, chirac, alex}) == 3
    assert run("--library", str(library), "label", "cluster", str(obama), "Barack Obama").exit_code == 0
    assert run("--library", str(library), "label", "cluster", str(chirac), "Jacques Chirac").exit_code == 0
    assert run("--library", str(library), "ignore", "cluster", str(alex)).exit_code == 0
    chirac_face = next(f for f, c in read_assignments(lib).items() if c == chirac and person_of[f] == "jacques_chirac")
    assert run("--library", str(library), "label", "face", chirac_face, "--not", "Barack Obama").exit_code == 0
    labels = read_labels(lib)

    for name in held_back:
        shutil.copy(faces_dev / name, photos / name)
    scan_quietly(library, photos)
    result = run("--library", str(library), "cluster", "--min-cluster-size", "3", "--min-samples", "2")
    assert result.exit_code == 0, result.output
    assert read_labels(lib).equals(labels)

    faces = lib.read_faces(["face_id", "path"])
    by_path = {"/".join(p.split("/")[-2:]): f for f, p in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist())}
    tags = tags_by_face(lib)
    assert tags[by_path["barack_obama/fr_knn_test_obama1.jpg"]][:2] == ("Barack Obama", "suggested")
    assert tags[by_path["jacques_chirac/pytopenface_chirac4.jpg"]][:2] == ("Jacques Chirac", "suggested")
    assert tags[chirac_face][0] == "Jacques Chirac"
    assert all(tags[f][0] is None for f, p in person_of.items() if p == "alex_lacamoire")
    named = set(labels.filter(pc.equal(labels["kind"], "name"))["face_id"].to_pylist())
    assert {f for f, t in tags.items() if t[1] == "confirmed"} == named  # every name still there
