"""What the user does (people.actions, through the library and the CLI): facts about faces that
survive re-clustering, new photos and renumbering, and undo."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

import pytest

from conftest import LIBRARY_MODEL, add_photos, dataset, person_centres, run, scan_quietly
from facebatch.errors import FacebatchError
from facebatch.people.actions import (
    history,
    ignore_cluster,
    label_cluster,
    label_faces,
    merge_clusters,
    reject_faces,
    split_faces,
    undo,
)
from facebatch.people.clustering import cluster_library, read_assignments
from facebatch.people.grouping import GroupingSettings
from facebatch.people.suggestions import face_tags, named_gallery, people_summary
from facebatch.people.view import build_view
from facebatch.store import Library

NAMES = ["ann", "bob", "cat", "dan", "eve", "gus1", "gus2"]


@pytest.fixture
def centres():
    return dict(zip(NAMES, person_centres(len(NAMES), seed=2)))


@pytest.fixture
def lib(tmp_path, centres) -> Library:
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    add_photos(library, {"ann": 6, "bob": 5, "cat": 4, "dan": 4, "gus1": 3, "gus2": 3, "eve": 3}, centres, "a")
    cluster_library(library, GroupingSettings())
    return library


def cluster_of(library: Library, person: str) -> int:
    ids = [c for f, c in read_assignments(library).items() if f.split("-")[1] == person and c >= 0]
    return max(set(ids), key=ids.count)


def tags_by_face(library: Library) -> dict[str, tuple[str | None, str, float]]:
    tags = face_tags(library)
    return {f: (p, s, float(c)) for f, p, s, c in zip(tags.face_ids, tags.person, tags.status, tags.confidence)}


def read_labels(library: Library):
    return library.read_labels()


def test_every_label_survives_new_photos_and_a_recluster_with_other_parameters(lib, centres):
    ann, bob, cat, dan = (cluster_of(lib, p) for p in ("ann", "bob", "cat", "dan"))
    gus1, gus2 = cluster_of(lib, "gus1"), cluster_of(lib, "gus2")
    assert gus1 != gus2
    result = label_cluster(lib, ann, "Ann Lee")
    assert (result.faces, result.name, result.cluster_id) == (6, "Ann Lee", ann)
    assert reject_faces(lib, ["f-ann-a-5"], "Ann Lee").faces == 1
    label_cluster(lib, bob, "Böb Ñúñez")
    label_faces(lib, ["f-bob-a-0"], "Robert")  # a face label outranks its cluster's name
    label_faces(lib, ["f-cat-a-0"], "Cat")
    merged = merge_clusters(lib, [gus1, gus2])
    assert (merged.cluster_id, merged.size, merged.clusters) == (gus1, 6, (gus1, gus2))
    label_cluster(lib, gus1, "Gus")
    assert ignore_cluster(lib, dan).faces == 4
    before = read_labels(lib)

    add_photos(lib, {"ann": 3, "bob": 2, "cat": 2, "dan": 2, "gus1": 2, "gus2": 2, "eve": 2}, centres, "b")
    cluster_library(lib, GroupingSettings(min_cluster_size=2, min_samples=1, method="leaf"))

    assert read_labels(lib).equals(before)  # clustering never rewrites the facts
    tags = tags_by_face(lib)
    assert tags["f-ann-a-0"] == ("Ann Lee", "confirmed", 1.0)
    assert tags["f-ann-a-5"][0] != "Ann Lee"  # "not Ann Lee" for good
    assert tags["f-bob-a-0"][:2] == ("Robert", "confirmed")
    assert tags["f-cat-a-0"][:2] == ("Cat", "confirmed")
    for new_face, person in (("f-ann-b-0", "Ann Lee"), ("f-bob-b-1", "Böb Ñúñez"), ("f-cat-b-0", "Cat"),
                             ("f-gus1-b-0", "Gus"), ("f-gus2-b-1", "Gus")):
        name, status, confidence = tags[new_face]
        assert (name, status) == (person, "suggested") and 0.8 <= confidence <= 1.0, new_face
    for face in ("f-dan-a-0", "f-dan-b-0", "f-eve-b-0"):
        assert tags[face][:2] == (None, "unknown")  # ignored: never suggested; eve: nobody named her
    # Numbers: same groups keep theirs; the merge holds after the re-run.
    assert (cluster_of(lib, "ann"), cluster_of(lib, "bob"), cluster_of(lib, "dan")) == (ann, bob, dan)
    assert cluster_of(lib, "gus1") == cluster_of(lib, "gus2") == gus1
    view = build_view(lib)
    assert view.clusters[dan].ignored and view.clusters[gus1].person == "Gus"
    with pytest.raises(FacebatchError, match=f"cluster {dan} is ignored: `facebatch ignore cluster {dan} --undo` first"):
        label_cluster(lib, dan, "Dan")
    gallery = named_gallery(lib)
    assert gallery.names == ["Ann Lee", "Böb Ñúñez", "Cat", "Gus", "Robert"]
    assert gallery.faces_of("Ann Lee") == 5
    assert (gallery.owner == gallery.names.index("Gus")).sum() == 2  # two people merged: two centres
    found = {p.name: (p.confirmed, p.suggested) for p in people_summary(face_tags(lib))}
    assert found["Ann Lee"][0] == 5 and found["Gus"] == (6, 4) and "Dan" not in found


def test_two_names_merged_into_one_cluster_are_a_conflict_with_the_fix(lib):
    cat, eve = cluster_of(lib, "cat"), cluster_of(lib, "eve")
    label_cluster(lib, cat, "Cat")
    label_cluster(lib, eve, "Eve")
    result = merge_clusters(lib, [cat, eve])
    assert result.conflict == (
        f"cluster {cat} holds faces named Cat (4) and Eve (3): shown as Cat; "
        f"`facebatch label cluster {cat} Cat` names them all, `facebatch label face FACE_ID Eve` keeps one face apart"
    )
    assert build_view(lib).clusters[cat].conflict
    assert tags_by_face(lib)["f-eve-a-0"] == ("Eve", "confirmed", 1.0)  # never silently renamed
    label_cluster(lib, cat, "Cat")  # the fix the line gave
    assert not build_view(lib).clusters[cat].conflict


def test_merging_a_cluster_shown_by_one_named_face_says_so(lib):
    cat, eve = cluster_of(lib, "cat"), cluster_of(lib, "eve")
    label_cluster(lib, cat, "Cat")
    label_faces(lib, ["f-eve-a-0"], "Eve")  # cluster eve is shown as Eve by this one face
    result = merge_clusters(lib, [cat, eve])
    assert result.conflict == (
        f"clusters {cat} (Cat), {eve} (Eve) were shown under different names: cluster {cat} is now shown as Cat; "
        "faces named one by one keep their names; `facebatch undo` takes the merge back"
    )
    assert tags_by_face(lib)["f-eve-a-0"] == ("Eve", "confirmed", 1.0)


def test_a_cluster_renamed_is_named_again(lib):
    ann = cluster_of(lib, "ann")
    label_cluster(lib, ann, "Ann")
    label_cluster(lib, ann, "Anne")
    assert build_view(lib).clusters[ann].person == "Anne"
    assert not build_view(lib).clusters[ann].conflict


def test_a_named_face_suggests_its_person_for_new_faces(lib, centres):
    label_faces(lib, ["f-eve-a-0"], "Eve")  # one face, not the cluster
    add_photos(lib, {"eve": 1}, centres, "c")  # scanned, not yet clustered
    tags = tags_by_face(lib)
    name, status, confidence = tags["f-eve-c-0"]
    assert (name, status) == ("Eve", "suggested") and 0.8 <= confidence < 1.0
    assert tags["f-bob-a-0"][:2] == (None, "unknown")  # far from every named face


def test_two_faces_of_one_photo_are_never_suggested_one_name(lib, centres, tmp_path):
    label_faces(lib, ["f-eve-a-0", "f-eve-a-1"], "Eve")
    twins = add_photos(lib, {"eve": 2}, centres, "t")
    # Put both new faces in one photo: rewrite their photo ids through a fresh library shard.
    faces = lib.read_faces()
    import pyarrow as pa

    rows = faces.filter(pa.compute.is_in(faces["face_id"], pa.array(twins))).to_pylist()
    assert len(rows) == 2
    photo = rows[0]["photo_id"]
    tags = face_tags(lib)
    # Before: two photos, both suggested Eve.
    assert [tags.person[tags.face_ids.index(f)] for f in twins] == ["Eve", "Eve"]
    from facebatch.models.catalog import FACENET_SCALE
    from facebatch.people import suggestions

    same = [photo if f in twins else p for f, p in zip(tags.face_ids, tags.photo_ids)]
    monkey = suggestions.FaceTags(tags.face_ids, same, tags.cluster_ids, [None] * len(same),
                                  ["unknown"] * len(same), tags.confidence.copy(), tags.distance.copy())
    person, status = list(monkey.person), list(monkey.status)
    for i, f in enumerate(tags.face_ids):
        if tags.status[i] == "confirmed":
            person[i], status[i] = tags.person[i], "confirmed"
    candidates = [(float(d), tags.face_ids.index(f), "Eve") for f, d in zip(twins, (0.3, 0.4))]
    suggestions._assign(candidates, same, person, status, monkey.confidence, monkey.distance, 0.8,
                        FACENET_SCALE)
    assert [person[tags.face_ids.index(f)] for f in twins] == ["Eve", None]  # the closer one keeps it


def test_split_makes_a_new_cluster_that_stays_apart(lib):
    ann = cluster_of(lib, "ann")
    result = split_faces(lib, ["f-ann-a-0", "f-ann-a-1"])
    assert (result.faces, result.clusters) == (2, (ann,))
    new = result.cluster_id
    assigned = read_assignments(lib)
    assert assigned["f-ann-a-0"] == assigned["f-ann-a-1"] == new != ann
    assert assigned["f-ann-a-2"] == ann
    cluster_library(lib, GroupingSettings())
    after = read_assignments(lib)
    assert after["f-ann-a-0"] == after["f-ann-a-1"] != after["f-ann-a-2"]


def test_undo_puts_back_each_action_in_turn(lib):
    ann, bob = cluster_of(lib, "ann"), cluster_of(lib, "bob")
    label_cluster(lib, ann, "Ann")
    label_cluster(lib, ann, "Anne")
    merge_clusters(lib, [ann, bob])
    assert [h.kinds for h in history(lib)][:3] == [("merge",), ("name",), ("name",)]
    first = undo(lib)
    assert first.undone.kinds == ("merge",)
    assert read_assignments(lib)["f-bob-a-0"] == bob  # the merge's move is undone too
    second = undo(lib)
    assert second.undone.values == ("Anne",)
    assert build_view(lib).clusters[ann].person == "Ann"  # back to the first name
    undo(lib)
    assert build_view(lib).clusters[ann].person is None
    with pytest.raises(FacebatchError, match="nothing to undo"):
        undo(lib)
    assert read_labels(lib).num_rows > 0  # nothing was deleted: undo is history too


def test_ignore_undo(lib):
    dan = cluster_of(lib, "dan")
    assert ignore_cluster(lib, dan).action > 0
    assert ignore_cluster(lib, dan).action == 0  # already ignored: nothing written
    assert ignore_cluster(lib, dan, undo=True).kind == "unignore"
    assert label_cluster(lib, dan, "Dan").faces == 4


def test_labels_keep_generations(lib):
    ann = cluster_of(lib, "ann")
    for name in ("A", "B", "C"):
        label_cluster(lib, ann, name)
    kept = sorted(p.name for p in lib.label_generations_dir.iterdir())
    assert kept == ["labels-000000002.parquet", "labels-000000003.parquet"]


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
                                  ["ignore", "cluster", "1"], ["people"], ["clusters"], ["undo"], ["split", "x"]])
def test_cli_on_a_never_scanned_library_is_one_line(tmp_path, args):
    result = run("--library", str(tmp_path / "lib"), *args)
    assert result.exit_code == 2
    assert result.output == (f"Error: no library at {tmp_path / 'lib'}: run `facebatch scan FOLDER` first, or point "
                             "at one with --library DIR or the FACEBATCH_LIBRARY variable\n")
    assert not (tmp_path / "lib").exists()


def test_cli_label_merge_split_undo_people(lib):
    ann, bob = cluster_of(lib, "ann"), cluster_of(lib, "bob")
    out = run("--library", str(lib.root), "label", "cluster", str(ann), "Zoë van der Berg").output
    assert out == f"cluster {ann} is Zoë van der Berg: 6 faces\n"
    out = run("label", "face", "f-ann-a-1", "--not", "Zoë van der Berg", "--library", str(lib.root)).output
    assert out == "face f-ann-a-1 is not Zoë van der Berg\n"
    assert run("--library", str(lib.root), "label", "face", "f-bob-a-1", "Bob").output == "face f-bob-a-1 is Bob\n"
    out = run("--library", str(lib.root), "people").output
    # One face named Bob: his other faces are suggested (each synthetic face is its own photo).
    assert out.splitlines() == [
        f"Bob\t1 confirmed, 4 suggested faces\t5 photos\tclusters {bob}",
        f"Zoë van der Berg\t5 confirmed, 0 suggested faces\t5 photos\tclusters {ann}",
        "2 people",
    ]
    out = run("--library", str(lib.root), "split", "f-bob-a-2", "f-bob-a-3").output
    assert out.startswith(f"2 faces split off cluster {bob} into cluster ")
    assert run("--library", str(lib.root), "undo").output == "undid action 4 (split, 2 faces)\n"  # the faces split off
    assert run("--library", str(lib.root), "undo").output == "undid action 3 (named Bob, 1 face)\n"


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
    result = run("--library", str(library), "cluster", "--min-cluster-size", "3", "--method", "leaf")
    assert result.exit_code == 0, result.output
    assert read_labels(lib).equals(labels)

    faces = lib.read_faces(["face_id", "path"])
    by_path = {"/".join(p.split("/")[-2:]): f for f, p in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist())}
    tags = tags_by_face(lib)
    assert tags[by_path["barack_obama/fr_knn_test_obama1.jpg"]][:2] == ("Barack Obama", "suggested")
    assert tags[by_path["jacques_chirac/pytopenface_chirac4.jpg"]][:2] == ("Jacques Chirac", "suggested")
    assert tags[chirac_face][0] == "Jacques Chirac"
    assert all(tags[f][0] is None for f, p in person_of.items() if p == "alex_lacamoire")


def test_naming_a_cluster_confirms_its_core_and_its_edge_waits_for_a_look(tmp_path, centres):
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    add_photos(library, {"ann": 20, "bob": 5}, centres, "a")
    cluster_library(library, GroupingSettings())
    ann = cluster_of(library, "ann")
    view = build_view(library)
    edge = set(view.members(ann)) - view.core_members(ann)
    assert len(edge) == 2  # the outer tenth of 20 faces, by distance to the centre of the others
    distance = dict(zip(view.face_ids.tolist(), view.distance.tolist()))
    assert min(distance[f] for f in edge) > max(distance[f] for f in view.core_members(ann))

    out = run("--library", str(library.root), "label", "cluster", str(ann), "Ann").output
    assert out == (f"cluster {ann} is Ann: 18 faces\n2 faces at the cluster's edge wait for a look before they are "
                   "Ann: `facebatch review`, then Queue\n")
    tags = tags_by_face(library)
    assert {f for f, (name, status, _) in tags.items() if status == "confirmed"} == view.core_members(ann)
    for face in edge:  # named, but as a suggestion with its calibrated confidence, never confirmed
        name, status, confidence = tags[face]
        assert (name, status) == ("Ann", "suggested") and 0.8 <= confidence < 1.0
    label_faces(library, [next(iter(edge))], "Ann")  # looked at: confirmed
    renamed = label_cluster(library, ann, "Ann Lee")  # a rename reaches the edge's old cluster name too
    assert (renamed.faces, renamed.waiting) == (18, 1)
    tags = tags_by_face(library)
    assert [tags[f][:2] for f in sorted(edge)].count(("Ann Lee", "suggested")) == 1
    assert not build_view(library).cluster(ann).conflict


def test_a_face_of_low_quality_never_anchors_a_cluster_nor_gets_a_name_by_itself(tmp_path, centres):
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    ids = add_photos(library, {"ann": 8}, centres, "a")
    profile = add_photos(library, {"ann": 1}, centres, "side")[0]
    faces = library.read_faces(["face_id", "quality"])
    assert all(q == 1.0 for q in faces["quality"].to_pylist())
    # The profile: nose beyond the eye (landmarks 5 points x, y: eyes, nose, mouth corners).
    table = library.read_part("faces", 2)
    points = [[30.0, 20.0, 40.0, 20.0, 52.0, 30.0, 31.0, 40.0, 39.0, 40.0]]
    table = table.set_column(table.schema.get_field_index("landmarks"), "landmarks",
                             pa.array(points, table.schema.field("landmarks").type))
    table = table.set_column(table.schema.get_field_index("quality"), "quality", pa.nulls(1, pa.float32()))
    pq.write_table(table, library.part_path("faces", 2))
    assert library.read_faces(["face_id", "quality"])["quality"].to_pylist()[-1] == 0.0
    cluster_library(library, GroupingSettings())
    assert read_assignments(library)[profile] == -1
    label_cluster(library, cluster_of(library, "ann"), "Ann")
    tags = tags_by_face(library)
    assert tags[profile][:2] == (None, "unknown")
    assert all(tags[f][0] == "Ann" for f in ids)
    label_faces(library, [profile], "Ann")  # the user can still name it
    assert tags_by_face(library)[profile][:2] == ("Ann", "confirmed")


def test_a_face_named_through_its_cluster_keeps_its_name_whatever_its_quality(tmp_path, centres):
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    ids = add_photos(library, {"ann": 8}, centres, "a")
    cluster_library(library, GroupingSettings())
    label_cluster(library, cluster_of(library, "ann"), "Ann")  # named before quality was measured
    table = library.read_part("faces", 1)
    poor = pa.array([0.1] + [None] * (table.num_rows - 1), pa.float32())  # as a library upgraded would read one
    pq.write_table(table.set_column(table.schema.get_field_index("quality"), "quality", poor), library.part_path("faces", 1))
    cluster_library(library, GroupingSettings())
    assert tags_by_face(library)[ids[0]][:2] == ("Ann", "confirmed")
