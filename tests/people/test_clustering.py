"""Clustering: HDBSCAN on the library's embeddings, stable numbers, quality on lfw-dev."""

from __future__ import annotations

import csv
import shutil
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import MODEL, add_photos, dataset, person_centres, run, scan_quietly
from facebatch.people.clustering import (
    ClusterSettings,
    cluster_faces,
    cluster_library,
    match_clusters,
    pca_reduce,
    read_assignments,
    read_clusters,
    read_state,
    run_hdbscan,
)
from facebatch.errors import FacebatchError
from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA
from facebatch.store import Library

NAMES = ["ann", "bob", "cat", "dan", "eve", "fay"]


@pytest.fixture
def centres() -> dict[str, np.ndarray]:
    return dict(zip(NAMES, person_centres(len(NAMES))))


@pytest.fixture
def synthetic(tmp_path, centres) -> Library:
    lib = Library(tmp_path / "lib")
    lib.create(MODEL)
    add_photos(lib, {"ann": 6, "bob": 5, "cat": 4, "dan": 4}, centres, "a")
    return lib


def clusters_by_person(lib: Library) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for face_id, c in read_assignments(lib).items():
        out.setdefault(face_id.split("-")[1], set()).add(c)
    return out


# --------------------------------------------------------------------------- units


def test_settings_are_validated():
    with pytest.raises(FacebatchError, match="--min-cluster-size must be at least 2, got 1"):
        ClusterSettings(min_cluster_size=1)
    with pytest.raises(FacebatchError, match="--method must be eom or leaf, got 'x'"):
        ClusterSettings(method="x")
    with pytest.raises(FacebatchError, match="--pca-dims must be between 0 and 512, got 600"):
        ClusterSettings(pca_dims=600)


def test_too_few_faces_are_unclustered():
    for n in (0, 1, 2):
        labels, probabilities = run_hdbscan(person_centres(max(n, 1))[:n], ClusterSettings(min_cluster_size=3))
        assert labels.tolist() == [-1] * n and probabilities.tolist() == [0.0] * n


def test_pca_keeps_unit_vectors_and_neighbours():
    rng = np.random.default_rng(0)
    centres = person_centres(20)
    x = np.repeat(centres, 10, axis=0) + 0.03 * rng.normal(size=(200, 512))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    reduced = pca_reduce(x, 32, sample=150)
    assert reduced.shape == (200, 32)
    assert np.allclose(np.linalg.norm(reduced, axis=1), 1.0)
    nearest = np.argsort(-(reduced @ reduced.T), axis=1)[:, 1]
    assert (nearest // 10 == np.arange(200) // 10).all()  # the nearest face is still the same person


def test_the_knn_graph_path_finds_the_same_clusters(monkeypatch):
    rng = np.random.default_rng(0)
    x = np.repeat(person_centres(30), 6, axis=0) + 0.03 * rng.normal(size=(180, 512))
    x = np.vstack([x, x[:1]])  # an exact duplicate: a zero distance must stay an edge
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    settings = ClusterSettings(pca_dims=0)
    exact, _ = run_hdbscan(x, settings)
    monkeypatch.setattr("facebatch.people.clustering.KNN_MIN_FACES", 10)
    graph, _ = run_hdbscan(x, settings)
    from facebatch.people.evaluation import pairwise_prf

    assert pairwise_prf(exact.tolist(), graph).f == 1.0
    assert len(set(graph[:180].tolist())) == 30


def test_small_faces_are_left_out_of_clusters():
    x = np.repeat(person_centres(2), 4, axis=0)
    sides = np.array([80, 80, 80, 20, 80, 80, 80, 80], np.float32)
    labels, _ = cluster_faces(x, sides, ClusterSettings(pca_dims=0))
    assert labels[3] == -1 and len(set(labels[[0, 1, 2]].tolist())) == 1 and labels[0] >= 0


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
    summary = cluster_library(synthetic, ClusterSettings(min_cluster_size=3, min_samples=1))
    assert (summary.faces, summary.clusters, summary.unclustered, summary.run) == (19, 4, 0, 1)
    before = clusters_by_person(synthetic)
    assert all(len(ids) == 1 for ids in before.values())
    assert len({next(iter(ids)) for ids in before.values()}) == 4

    add_photos(synthetic, {"ann": 2, "eve": 4}, centres, "b")
    summary = cluster_library(synthetic, ClusterSettings(min_cluster_size=2, min_samples=2, method="eom"))
    after = clusters_by_person(synthetic)
    assert {p: after[p] for p in before} == before  # same groups, same numbers
    assert after["eve"] == {5}  # a new group: the next number never used
    assert (summary.kept, summary.new, summary.run) == (4, 1, 2)
    assert read_state(synthetic).next_id == 6
    table = read_clusters(synthetic)
    first_run = dict(zip(table["face_id"].to_pylist(), table["first_run"].to_pylist()))
    assert first_run["f-ann-a-0"] == 1 and first_run["f-eve-b-0"] == 2


def test_numbers_of_vanished_clusters_are_not_reused(synthetic, centres, tmp_path):
    cluster_library(synthetic, ClusterSettings(min_cluster_size=3))
    dan = {face_id for face_id, c in read_assignments(synthetic).items() if "dan" in face_id}
    dan_id = read_assignments(synthetic)[next(iter(dan))]
    # Dan's photos are deleted (a scan marks them gone, reconcile drops the faces).
    now = datetime.now(timezone.utc)
    gone = [{"photo_id": f"p-dan-a-{k}", "path": f"/photos/a/dan/{k}.jpg", "size_bytes": 10, "mtime": 1,
             "n_faces": 0, "status": "gone", "scanned_at": now} for k in range(4)]
    synthetic.write_shard(pa.Table.from_pylist(gone, PHOTOS_SCHEMA), FACES_SCHEMA.empty_table(), {}, MODEL)
    synthetic.reconcile()
    cluster_library(synthetic, ClusterSettings(min_cluster_size=3))
    add_photos(synthetic, {"fay": 4}, centres, "c")
    cluster_library(synthetic, ClusterSettings(min_cluster_size=3))
    assert dan_id not in set(read_assignments(synthetic).values())
    assert clusters_by_person(synthetic)["fay"] == {5}


def test_read_assignments_covers_faces_scanned_since(synthetic, centres):
    cluster_library(synthetic, ClusterSettings(min_cluster_size=3))
    new = add_photos(synthetic, {"eve": 3}, centres, "b")
    assignments = read_assignments(synthetic)
    assert len(assignments) == 22 and all(assignments[f] == -1 for f in new)


def test_an_empty_scanned_library_clusters_to_nothing(tmp_path):
    lib = Library(tmp_path / "lib")
    lib.create(MODEL)
    summary = cluster_library(lib, ClusterSettings())
    assert (summary.faces, summary.clusters) == (0, 0)
    assert read_assignments(lib) == {}


# --------------------------------------------------------------------------- CLI


def test_cli_cluster_on_a_never_scanned_library_is_one_line(tmp_path):
    result = run("--library", str(tmp_path / "lib"), "cluster")
    assert result.exit_code == 1
    assert result.output == f"Error: no library at {tmp_path / 'lib'}: run `facebatch scan FOLDER` first\n"
    assert not (tmp_path / "lib").exists()


def test_cli_clusters_before_cluster_is_one_line(synthetic):
    result = run("--library", str(synthetic.root), "clusters")
    assert (result.exit_code, result.output) == (1, "Error: no clusters yet: run `facebatch cluster` first\n")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--min-cluster-size", "1"], "--min-cluster-size must be at least 2, got 1"),
        (["--min-samples", "0"], "--min-samples must be at least 1, got 0"),
        (["--epsilon", "3"], "--epsilon must be between 0 and 2, got 3.0"),
        (["--pca-dims", "-1"], "--pca-dims must be between 0 and 512, got -1"),
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


def test_every_new_command_has_help_with_an_example():
    for args in (["cluster"], ["clusters"], ["label"], ["label", "cluster"], ["label", "face"], ["merge"],
                 ["ignore"], ["ignore", "cluster"], ["people"], ["export"]):
        result = run(*args, "--help")
        assert result.exit_code == 0 and "Example:" in result.output, args


# --------------------------------------------------------------------------- lfw-dev


def lfw_truth(lib: Library, lfw: Path) -> tuple[list[str], list[int]]:
    """Folder identity of each photo's central face; other faces (background people) are strangers."""
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
    central = {i for _, i in best.values()}
    assignments = read_assignments(lib)
    truth, predicted = [], []
    for i, (face_id, path) in enumerate(zip(faces["face_id"].to_pylist(), faces["path"].to_pylist())):
        truth.append(identity[str(Path(path).resolve())] if i in central else f"stranger:{face_id}")
        predicted.append(assignments[face_id])
    return truth, predicted


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
    cluster_library(lib, ClusterSettings())
    f, _, coverage = report("lfw-dev subset", *lfw_truth(lib, photos))
    assert f >= 0.90
    assert coverage >= 0.75


@pytest.mark.slow
def test_lfw_full_clusters_by_person(tmp_path):
    """All 3,282 photos (scan and cluster: 168 s on 2 cores). benchmarks/cluster_params.py measured 0.911."""
    lfw = dataset("lfw-dev")
    scan_quietly(tmp_path / "lib", lfw / "images")
    lib = Library(tmp_path / "lib")
    cluster_library(lib, ClusterSettings())
    f, _, _ = report("lfw-dev", *lfw_truth(lib, lfw))
    assert f >= 0.90


def test_approximate_neighbours_match_exact_ones(monkeypatch):
    """Big libraries take their neighbour graph from faiss: same graph, up to a few missed edges."""
    pytest.importorskip("faiss", reason="faiss-cpu is the optional 'large' extra")
    import facebatch.people.clustering as clustering

    rng = np.random.default_rng(3)
    centres = person_centres(300, seed=4)
    truth = rng.integers(0, 300, 6000)
    x = centres[truth] + 0.02 * rng.normal(size=(6000, 512))
    x = clustering.pca_reduce(x, 64, 6000).astype(np.float32)
    exact_cols, _ = clustering._exact_neighbours(x, 10, 512)
    approx_cols, approx_sims = clustering._approximate_neighbours(x, 10, 512)
    assert not (approx_cols == np.arange(len(x))[:, None]).any()  # never its own neighbour
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_cols.tolist(), exact_cols.tolist())])
    assert recall > 0.9
    assert np.all(np.diff(approx_sims, axis=1) <= 1e-6)  # nearest first
    monkeypatch.setattr(clustering, "KNN_MIN_FACES", 1000)
    exact = clustering.run_hdbscan(x, ClusterSettings(pca_dims=0))[0]
    monkeypatch.setattr(clustering, "ANN_MIN_FACES", 1000)
    approx = clustering.run_hdbscan(x, ClusterSettings(pca_dims=0))[0]
    from facebatch.people.evaluation import pairwise_prf

    assert pairwise_prf(truth.tolist(), approx).f >= pairwise_prf(truth.tolist(), exact).f - 0.02
