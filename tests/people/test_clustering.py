"""`facebatch cluster` on libraries: stable numbers, real faces (sample_data, lfw), the CLI."""

from __future__ import annotations

import csv
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import LIBRARY_MODEL, MODEL, SAMPLE_DATA, add_photos, dataset, person_centres, run, scan_quietly
from facebatch.people.clustering import ClusterState, cluster_library, match_clusters, read_assignments
from facebatch.people.grouping import GroupingSettings
from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA
from facebatch.store import Library, LibraryModel

NAMES = ["ann", "bob", "cat", "dan", "eve", "fay"]


@pytest.fixture
def centres() -> dict[str, np.ndarray]:
    return dict(zip(NAMES, person_centres(len(NAMES))))


@pytest.fixture
def synthetic(tmp_path, centres) -> Library:
    lib = Library(tmp_path / "lib")
    lib.create(LIBRARY_MODEL)
    add_photos(lib, {"ann": 6, "bob": 5, "cat": 4, "dan": 4}, centres, "a")
    return lib


def clusters_by_person(lib: Library) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for face_id, c in read_assignments(lib).items():
        out.setdefault(face_id.split("-")[1], set()).add(c)
    return out


# --------------------------------------------------------------------------- units


def test_match_keeps_numbers_of_the_same_groups_and_never_reuses_one():
    old = np.array([5, 5, 5, 7, 7, 7, 9, 9, -1, -1])
    new = np.array([0, 0, 0, 1, 1, 1, -1, -1, 2, 2])  # 5 and 7 found again; 9 gone; a new group
    ids, next_id, kept = match_clusters(new, old, next_id=10)
    assert ids.tolist() == [5, 5, 5, 7, 7, 7, -1, -1, 10, 10]
    assert (next_id, kept) == (11, 2)


def test_a_split_cluster_keeps_its_number_on_the_bigger_part():
    old = np.array([3] * 6)
    new = np.array([0, 0, 0, 0, 1, 1])
    ids, next_id, _ = match_clusters(new, old, next_id=4)
    assert ids.tolist() == [3, 3, 3, 3, 4, 4] and next_id == 5


def test_a_cluster_sharing_few_faces_gets_a_new_number():
    old = np.array([3, 3, 3, 3, 3, 3, -1, -1, -1, -1])
    new = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    new[5] = 1  # one face of 3 drifted into an otherwise new group: that group is not "3"
    ids, _, kept = match_clusters(new, old, next_id=4)
    assert set(ids[6:].tolist()) == {4} and kept == 1


# --------------------------------------------------------------------------- library runs


def test_cluster_library_groups_people_and_reruns_keep_numbers(synthetic, centres):
    summary = cluster_library(synthetic, GroupingSettings(min_cluster_size=3, min_samples=1))
    assert (summary.faces, summary.clusters, summary.unclustered, summary.run) == (19, 4, 0, 1)
    before = clusters_by_person(synthetic)
    assert all(len(ids) == 1 for ids in before.values())
    assert len({next(iter(ids)) for ids in before.values()}) == 4

    add_photos(synthetic, {"ann": 2, "eve": 4}, centres, "b")
    summary = cluster_library(synthetic, GroupingSettings(min_cluster_size=2, min_samples=2, method="eom"))
    after = clusters_by_person(synthetic)
    assert {p: after[p] for p in before} == before  # same groups, same numbers
    assert after["eve"] == {5}  # a new group: the next number never used
    assert (summary.kept, summary.new, summary.run) == (4, 1, 2)
    assert ClusterState.read(synthetic).next_id == 6
    table = synthetic.read_clusters()
    first_run = dict(zip(table["face_id"].to_pylist(), table["first_run"].to_pylist()))
    assert first_run["f-ann-a-0"] == 1 and first_run["f-eve-b-0"] == 2


def test_numbers_of_vanished_clusters_are_not_reused(synthetic, centres, tmp_path):
    cluster_library(synthetic, GroupingSettings(min_cluster_size=3))
    dan = {face_id for face_id, c in read_assignments(synthetic).items() if "dan" in face_id}
    dan_id = read_assignments(synthetic)[next(iter(dan))]
    # Dan's photos are deleted (a scan marks them gone, reconcile drops the faces).
    now = datetime.now(timezone.utc)
    gone = [{"photo_id": f"p-dan-a-{k}", "path": f"/photos/a/dan/{k}.jpg", "size_bytes": 10, "mtime": 1,
             "n_faces": 0, "status": "gone", "scanned_at": now} for k in range(4)]
    synthetic.write_shard(pa.Table.from_pylist(gone, PHOTOS_SCHEMA), FACES_SCHEMA.empty_table(), {}, MODEL)
    synthetic.reconcile()
    cluster_library(synthetic, GroupingSettings(min_cluster_size=3))
    add_photos(synthetic, {"fay": 4}, centres, "c")
    cluster_library(synthetic, GroupingSettings(min_cluster_size=3))
    assert dan_id not in set(read_assignments(synthetic).values())
    assert clusters_by_person(synthetic)["fay"] == {5}


def test_read_assignments_covers_faces_scanned_since(synthetic, centres):
    cluster_library(synthetic, GroupingSettings(min_cluster_size=3))
    new = add_photos(synthetic, {"eve": 3}, centres, "b")
    assignments = read_assignments(synthetic)
    assert len(assignments) == 22 and all(assignments[f] == -1 for f in new)


def test_an_empty_scanned_library_clusters_to_nothing(tmp_path):
    lib = Library(tmp_path / "lib")
    lib.create(LIBRARY_MODEL)
    summary = cluster_library(lib, GroupingSettings())
    assert (summary.faces, summary.clusters) == (0, 0)
    assert read_assignments(lib) == {}


# --------------------------------------------------------------------------- CLI


def test_cli_cluster_on_a_never_scanned_library_is_one_line(tmp_path):
    result = run("--library", str(tmp_path / "lib"), "cluster")
    assert result.exit_code == 2
    assert result.output == (f"Error: no library at {tmp_path / 'lib'}: run `facebatch scan FOLDER` first, or point "
                             "at one with --library DIR or the FACEBATCH_LIBRARY variable\n")
    assert not (tmp_path / "lib").exists()


def test_cli_clusters_before_cluster_is_one_line(synthetic):
    result = run("--library", str(synthetic.root), "clusters")
    assert (result.exit_code, result.output) == (2, "Error: no clusters yet: run `facebatch cluster` first\n")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--min-cluster-size", "1"], "--min-cluster-size must be at least 2, got 1"),
        (["--min-samples", "0"], "--min-samples must be at least 1, got 0"),
        (["--member-distance", "3"], "--member-distance must be in (0, 2], got 3.0"),
        (["--pca-dims", "-1"], "--pca-dims must be at least 0, got -1"),
        (["--min-face-size", "-5"], "--min-face-size must be at least 0 pixels, got -5.0"),
    ],
)
def test_cli_bad_cluster_options_are_one_line(synthetic, option, message):
    result = run("--library", str(synthetic.root), "cluster", *option)
    assert (result.exit_code, result.output) == (1, f"Error: {message}\n")
    assert not (synthetic.root / "clusters.parquet").exists()


def test_cli_cluster_and_clusters(synthetic):
    result = run("--library", str(synthetic.root), "cluster", "--min-cluster-size", "3")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("19 faces: 4 clusters (0 kept their number, 4 new), 0 unclustered; run 1, ")
    assert result.output.endswith("; 0 named\n")
    result = run("--library", str(synthetic.root), "clusters", "--examples", "1")
    lines = result.output.splitlines()
    assert lines[0].split()[1:4] == ["6", "faces", "unnamed"] and lines[0].endswith(".jpg")
    assert lines[-1] == "4 clusters, 0 unclustered faces"


def test_cli_similar_lists_pairs_within_verifys_threshold_nearest_first_but_never_two_named_people(synthetic):
    from facebatch.people.actions import label_cluster

    run("--library", str(synthetic.root), "cluster", "--min-cluster-size", "3")
    a, b, c, d = sorted(set(read_assignments(synthetic).values()) - {-1})
    # The nearest pairs as a clustering run recorded them: two within verify's threshold (FaceNet's
    # 1.108), two beyond it, which verify would call two people.
    pairs = pa.table({"cluster_id": [a, a, b, c], "other_id": [b, c, d, d], "distance": [1.05, 0.85, 1.2, 1.3]})
    synthetic.write_clustering(synthetic.read_clusters(), pairs, synthetic.read_cluster_state())
    lines = run("--library", str(synthetic.root), "clusters", "--similar").output.splitlines()
    assert lines == [
        f"0.850  confidence 0.73  {a} (unnamed, 6 faces)  {c} (unnamed, 4 faces)  `facebatch merge {a} {c}`",
        f"1.050  confidence 0.01  {a} (unnamed, 6 faces)  {b} (unnamed, 5 faces)  `facebatch merge {a} {b}`",
        "2 pairs within verify's threshold (1.108)",
    ]
    label_cluster(synthetic, a, "Ann")
    label_cluster(synthetic, c, "Cat")
    after = run("--library", str(synthetic.root), "clusters", "--similar").output.splitlines()
    assert after == [lines[1].replace("(unnamed, 6 faces)", "(Ann, 6 faces)"), "1 pair within verify's threshold (1.108)"]


def test_every_new_command_has_help_with_an_example():
    for args in (["cluster"], ["clusters"], ["label"], ["label", "cluster"], ["label", "face"], ["merge"],
                 ["split"], ["undo"], ["ignore"], ["ignore", "cluster"], ["people"], ["export"]):
        result = run(*args, "--help")
        assert result.exit_code == 0 and "Example:" in result.output, args


# --------------------------------------------------------------------------- lfw-dev


def lfw_truth(lib: Library, lfw: Path) -> tuple[list[str], list[int]]:
    """Folder identity and cluster of each photo's central face (the identified faces; background
    faces are left out: the same bystander at one event is rightly one cluster)."""
    faces = lib.read_faces(["face_id", "photo_id", "path", "box"])
    identity = {}
    with open(lfw / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            identity[str((lfw / "images" / row["path"]).resolve())] = row["identity"]
    best: dict[str, tuple[float, int]] = {}
    for i, (photo, box) in enumerate(zip(faces["photo_id"].to_pylist(), faces["box"].to_pylist())):
        off = np.hypot((box[0] + box[2]) / 2 - 125, (box[1] + box[3]) / 2 - 125)  # LFW photos are 250 x 250
        if photo not in best or off < best[photo][0]:
            best[photo] = (off, i)
    assignments = read_assignments(lib)
    face_ids, paths = faces["face_id"].to_pylist(), faces["path"].to_pylist()
    central = sorted(i for _, i in best.values())
    return ([identity[str(Path(paths[i]).resolve())] for i in central], [assignments[face_ids[i]] for i in central])


def report(name: str, truth: list[str], predicted: list[int]) -> tuple[float, float, float]:
    from facebatch.people.evaluation import bcubed_prf, pairwise_prf

    pw, bc = pairwise_prf(truth, predicted), bcubed_prf(truth, predicted)
    coverage = float((np.array(predicted) >= 0).mean())
    print(f"\n{name}: {len(truth)} faces, pairwise P {pw.precision:.3f} R {pw.recall:.3f} F {pw.f:.3f}, "
          f"BCubed F {bc.f:.3f}, coverage {coverage:.3f}")
    return pw.f, bc.f, coverage



@pytest.fixture(scope="session")
def lfw_subset(tmp_path_factory) -> tuple[Library, Path]:
    """Every 7th person of lfw-dev (about 106 people, 470 photos), scanned once per session."""
    lfw = dataset("lfw-dev")
    people = sorted(p.name for p in (lfw / "images").iterdir() if p.is_dir())[::7]
    root = tmp_path_factory.mktemp("lfw-subset")
    photos = root / "photos"
    for person in people:
        shutil.copytree(lfw / "images" / person, photos / "images" / person)
    shutil.copy(lfw / "manifest.csv", photos / "manifest.csv")
    scan_quietly(root / "lib", photos / "images")
    return Library(root / "lib"), photos


def test_lfw_subset_clusters_by_person(lfw_subset):
    lib, photos = lfw_subset
    cluster_library(lib, GroupingSettings())
    f, _, coverage = report("lfw-dev subset", *lfw_truth(lib, photos))
    assert f >= 0.90
    assert coverage >= 0.75


@pytest.mark.slow
def test_lfw_full_clusters_by_person(tmp_path):
    """All 3,282 photos (scan and cluster: about 4 minutes on 2 cores); benchmarks/people_mix.py has the table."""
    lfw = dataset("lfw-dev")
    scan_quietly(tmp_path / "lib", lfw / "images")
    lib = Library(tmp_path / "lib")
    cluster_library(lib, GroupingSettings())
    f, _, _ = report("lfw-dev", *lfw_truth(lib, lfw))
    assert f >= 0.90


# --------------------------------------------------------------------------- real faces


def faces_by_photo(library: Library) -> dict[str, list[str]]:
    faces = library.read_faces(["face_id", "path"])
    out: dict[str, list[str]] = {}
    for face_id, path in zip(faces["face_id"].to_pylist(), faces["path"].to_pylist()):
        out.setdefault(str(Path(path).relative_to(SAMPLE_DATA)), []).append(face_id)
    return out


def test_sample_data_group_photo_faces_end_in_different_clusters(sample_library):
    cluster_library(sample_library, GroupingSettings())
    assignments = read_assignments(sample_library)
    photos = faces_by_photo(sample_library)
    for path, faces in photos.items():
        clustered = [assignments[f] for f in faces if assignments[f] >= 0]
        assert len(clustered) == len(set(clustered)), path  # no cluster holds two faces of one photo
    obama = {assignments[f] for p, fs in photos.items() if "barack_obama" in p for f in fs}
    biden = {assignments[f] for p, fs in photos.items() if "joe_biden" in p for f in fs}
    assert len(obama) == 1 and len(biden) == 1 and obama != biden and -1 not in obama | biden
    group = {assignments[f] for f in photos["groups/situation_room_2011.jpg"]}
    assert obama < group and biden < group  # both are in the Situation Room photo too


def test_not_keeps_a_face_out_of_its_cluster_after_reclustering(sample_library):
    cluster_library(sample_library, GroupingSettings())
    assignments = read_assignments(sample_library)
    photos = faces_by_photo(sample_library)
    obama = assignments[photos["people/barack_obama/1.jpg"][0]]
    in_group = next(f for f in photos["groups/situation_room_2011.jpg"] if assignments[f] == obama)
    assert run("--library", sample_library.root, "label", "cluster", obama, "Barack Obama").exit_code == 0
    result = run("--library", sample_library.root, "label", "face", in_group, "--not", "Barack Obama")
    assert (result.exit_code, result.output) == (0, f"face {in_group} is not Barack Obama\n")
    cluster_library(sample_library, GroupingSettings())
    after = read_assignments(sample_library)
    assert after[in_group] != after[photos["people/barack_obama/1.jpg"][0]]
    assert after[photos["people/barack_obama/1.jpg"][0]] == obama  # the rest keeps its number


def test_a_person_with_many_photos_is_one_cluster_and_strangers_stay_out(tmp_path):
    """Two lfw-many people (every photo) and 40 one-photo strangers, scanned for real."""
    many, strangers = dataset("lfw-many"), dataset("lfw-strangers")
    photos = tmp_path / "photos"
    by_person: dict[str, list[str]] = {}
    with open(many / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_person.setdefault(row["identity"], []).append(row["path"])
    chosen = sorted((p for p in by_person if 25 <= len(by_person[p]) <= 40))[:2]
    for person in chosen:
        shutil.copytree(many / "images" / person, photos / person)
    with open(strangers / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)][::50][:40]
    for row in rows:
        target = photos / "strangers" / row["path"].replace("/", "-")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(strangers / "images" / row["path"], target)
    scan_quietly(tmp_path / "lib", photos)
    lib = Library(tmp_path / "lib")
    cluster_library(lib, GroupingSettings())
    faces = lib.read_faces(["face_id", "path", "box"])
    assignments = read_assignments(lib)
    central: dict[str, tuple[float, str]] = {}  # LFW photos are 250 x 250, the person in the middle
    for face_id, path, box in zip(*(faces[c].to_pylist() for c in ("face_id", "path", "box"))):
        off = np.hypot((box[0] + box[2]) / 2 - 125, (box[1] + box[3]) / 2 - 125)
        if path not in central or off < central[path][0]:
            central[path] = (off, face_id)
    clusters: dict[str, list[int]] = {}
    for path, (_, face_id) in central.items():
        clusters.setdefault(Path(path).parent.name, []).append(assignments[face_id])
    for person in chosen:
        ids = clusters[person]
        main = max(set(ids), key=ids.count)
        assert set(ids) - {-1} == {main} and ids.count(main) >= 0.85 * len(ids), (person, ids)  # one cluster
    friends = {max(set(clusters[p]), key=clusters[p].count) for p in chosen}
    assert not friends & set(clusters["strangers"])  # no stranger in a friend's cluster


def test_names_survive_the_change_of_clustering_method(tmp_path, centres):
    """A library labelled by the version before (old labels and clusters files) keeps every name."""
    import pyarrow.parquet as pq

    lib = Library(tmp_path / "lib")
    lib.create(LIBRARY_MODEL)
    faces = add_photos(lib, {"ann": 6, "bob": 5, "cat": 4}, centres, "a")
    now = datetime.now(timezone.utc)
    old_clusters = pa.table({"face_id": faces, "cluster_id": [1] * 6 + [2] * 5 + [-1] * 4,
                             "probability": [0.9] * 15, "first_run": [1] * 15})
    pq.write_table(old_clusters, lib.root / "clusters.parquet")
    (lib.root / "clusters.json").write_text('{"run": 1, "next_id": 3, "settings": {"method": "leaf"}}')
    old_labels = pa.table({
        "face_id": faces[:6] + ["f-bob-a-0", "f-cat-a-0", "f-ann-a-5"],
        "kind": ["name"] * 6 + ["name", "name", "not"],
        "value": ["Ann"] * 6 + ["Robert", "Cat", "Ann"],
        "source": ["cluster"] * 6 + ["face", "face", "face"],
        "run": [1] * 9,
        "created_at": pa.array([now] * 6 + [now.replace(microsecond=0)] * 3, pa.timestamp("ms", tz="UTC")),
    })
    pq.write_table(old_labels, lib.root / "labels.parquet")
    cluster_library(lib, GroupingSettings())
    from facebatch.people.suggestions import face_tags

    tags = face_tags(lib)
    tag = {f: (p, s) for f, p, s in zip(tags.face_ids, tags.person, tags.status)}
    assert all(tag[f] == ("Ann", "confirmed") for f in faces[:5])
    assert tag["f-ann-a-5"][0] != "Ann"  # "not Ann", for good
    assert tag["f-bob-a-0"] == ("Robert", "confirmed") and tag["f-cat-a-0"] == ("Cat", "confirmed")
    assert all(tag[f] == ("Cat", "suggested") for f in faces[12:15])  # Cat's other photos follow her
    assert read_assignments(lib)[faces[0]] == 1  # Ann's cluster keeps its number
    assert lib.read_labels().num_rows == 9  # read as history, never rewritten by clustering


def test_weights_whose_distances_were_never_measured_are_refused_for_people_work(tmp_path, centres):
    lib = Library(tmp_path / "lib")
    tag = "vggface2@0123456789ab/box-margin44-182-centre160/onnx-int8"
    lib.create(LibraryModel(tag, "facenet", "vggface2", chosen=True))
    add_photos(lib, {"ann": 4, "bob": 4}, centres, "a", model=tag)
    result = run("--library", str(lib.root), "cluster")
    assert (result.exit_code, result.output) == (1, (
        f"Error: library {lib.root} holds facenet embeddings with weights vggface2, whose distances facebatch "
        "has not measured: the people commands need a measured model; `facebatch scan FOLDER --model sface` "
        "embeds the faces again with one, keeping every face id and name\n"))
    assert not lib.has_clusters()


def test_library_can_follow_a_group_as_well_as_a_command(synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./facebatch-library here: the option must be what finds it
    run("--library", str(synthetic.root), "cluster")
    cluster = max(read_assignments(synthetic).values())
    result = run("label", "--library", str(synthetic.root), "cluster", str(cluster), "Ann")
    assert result.exit_code == 0 and result.output.startswith(f"cluster {cluster} is Ann: "), result.output
    other = min(c for c in read_assignments(synthetic).values() if c >= 0)
    assert run("ignore", "--library", str(synthetic.root), "cluster", str(other)).exit_code == 0
    assert run("show", "--library", str(synthetic.root), "cluster", "--help").exit_code == 0
    assert not (tmp_path / "facebatch-library").exists()
