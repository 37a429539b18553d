"""people.grouping: HDBSCAN proposals judged on the model's distance scale, with the user's constraints."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import person_centres
from facebatch.errors import UsageError
from facebatch.models.catalog import FACENET_SCALE
from facebatch.people.evaluation import pairwise_prf
from facebatch.people.grouping import (
    Constraints,
    GroupingSettings,
    centre_distance,
    group_faces,
    hdbscan_proposals,
    nearest_neighbours,
    pca_reduce,
    person_distance,
)


def faces_of(sizes: list[int], seed: int = 0, noise: float = 0.03) -> tuple[np.ndarray, list[int]]:
    """Unit vectors around one random centre per person (pair distance ~0.8, people ~1.41 apart)."""
    rng = np.random.default_rng(seed)
    centres = person_centres(len(sizes), seed=seed + 1)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[truth] + noise * rng.normal(size=(len(truth), 512))
    return x / np.linalg.norm(x, axis=1, keepdims=True), truth.tolist()


def group(x: np.ndarray, photo: np.ndarray | None = None, constraints: Constraints | None = None,
          **settings: object) -> np.ndarray:
    n = len(x)
    photo = np.arange(n) if photo is None else photo
    return group_faces(x, np.full(n, 100.0), photo, GroupingSettings(**settings).on_scale(FACENET_SCALE), constraints).labels


def test_settings_are_validated():
    with pytest.raises(UsageError, match="--min-cluster-size must be at least 2, got 1"):
        GroupingSettings(min_cluster_size=1)
    with pytest.raises(UsageError, match="--method must be eom or leaf, got 'x'"):
        GroupingSettings(method="x")
    with pytest.raises(UsageError, match="--pca-dims must be at least 0, got -1"):
        GroupingSettings(pca_dims=-1)
    with pytest.raises(UsageError, match=r"--member-distance must be in \(0, 2\], got 0.0"):
        GroupingSettings(member_distance=0.0)


def test_distance_to_a_centre():
    a, b = np.eye(512)[0], np.eye(512)[1]
    assert person_distance(a, a[None]) == pytest.approx(0.0)
    assert person_distance(a, b[None]) == pytest.approx(np.sqrt(2))  # one face: the plain pair distance
    assert person_distance(a, np.stack([a, b])) == pytest.approx(np.sqrt(2 - np.sqrt(2)))  # 45 degrees
    assert np.isnan(centre_distance(np.array(0.0), np.array(0.0)))


def test_too_few_faces_are_unclustered():
    for n in (0, 1, 2):
        x, _ = faces_of([max(n, 1)])
        assert group(x[:n]).tolist() == [-1] * n


def test_people_are_found_and_strangers_stay_out():
    x, truth = faces_of([40, 12, 5, 3] + [1] * 30)
    labels = group(x)
    assert pairwise_prf(truth[:60], labels[:60].tolist()).f == 1.0
    assert (labels[60:] == -1).all()  # 30 strangers, each seen once


def test_a_person_with_many_photos_is_one_cluster():
    """Hundreds of faces of one person with a loose spread: HDBSCAN's leaves come back together."""
    x, truth = faces_of([400, 6, 6], noise=0.04)
    labels = group(x, method="leaf", min_samples=1)
    assert len(set(labels[:400].tolist())) == 1 and labels[0] >= 0


def test_two_faces_of_one_photo_are_never_in_one_cluster():
    x, _ = faces_of([6, 6])
    x = np.vstack([x, x[0] * 0.999 + 0.001 * x[1]])  # a near copy of face 0 in photo 0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    photo = np.r_[np.arange(12), 0]
    labels = group(x, photo)
    assert max(labels[0], labels[12]) >= 0 and labels[0] != labels[12]  # one of the two, not both


def test_a_group_photo_does_not_decide_who_a_cluster_is():
    """Faces of one crowd photo + a person's portraits: the portraits' face in the crowd stays."""
    x, _ = faces_of([3] + [1] * 8, seed=3)
    crowd = np.vstack([x[0] + 0.02 * x[3:].mean(0), x[3:]])  # person 0 in the crowd, 8 others
    faces = np.vstack([x[:3], crowd])
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    photo = np.r_[0, 1, 2, np.full(9, 3)]
    labels = group(faces, photo, min_samples=1, method="leaf")
    assert labels[0] == labels[1] == labels[2] == labels[3] >= 0
    assert (labels[4:] == -1).all()


def test_hard_must_link_pulls_a_far_face_in_and_a_cluster_name_does_not():
    x, _ = faces_of([8, 1], seed=5)
    hard = Constraints(np.zeros(9, np.int64), np.ones(9, bool), np.zeros(9, bool))
    soft = Constraints(np.zeros(9, np.int64), np.zeros(9, bool), np.zeros(9, bool))
    assert len(set(group(x, constraints=hard).tolist())) == 1
    labels = group(x, constraints=soft)
    assert labels[8] == -1 and labels[0] >= 0


def test_cannot_link_keeps_named_people_apart():
    """Two people so alike that they cluster together, named apart by the user: two clusters."""
    x, _ = faces_of([6, 6], seed=7)
    x[6:] = x[:6] + 0.05 * (x[6:] - x[:6])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert len(set(group(x).tolist())) == 1
    user = np.array([0] * 6 + [1] * 6)
    labels = group(x, constraints=Constraints(user, np.ones(12, bool), np.zeros(12, bool), frozenset({(0, 1)})))
    assert len(set(labels[:6].tolist())) == 1 and len(set(labels[6:].tolist())) == 1 and labels[0] != labels[6]


def test_not_keeps_a_face_out_of_that_person():
    x, _ = faces_of([8], seed=9)
    user = np.array([0] * 7 + [-1])
    labels = group(x, constraints=Constraints(user, user >= 0, np.zeros(8, bool), frozenset(), frozenset({(7, 0)})))
    assert labels[0] >= 0 and labels[7] != labels[0]


def test_merged_far_apart_groups_are_one_cluster_with_two_centres():
    """A child at 2 and at 12: the user merged them; they stay one cluster, two modes."""
    x, _ = faces_of([6, 6], seed=11)
    merged = Constraints(np.zeros(12, np.int64), np.zeros(12, bool), np.ones(12, bool))
    result = group_faces(x, np.full(12, 100.0), np.arange(12), GroupingSettings().on_scale(FACENET_SCALE), merged)
    assert len(set(result.labels.tolist())) == 1 and result.labels[0] >= 0
    assert len(set(result.modes.tolist())) == 2
    named_only = Constraints(np.zeros(12, np.int64), np.zeros(12, bool), np.zeros(12, bool))
    assert len(set(group(x, constraints=named_only).tolist())) == 2  # a name alone does not bridge 1.4


def test_pca_keeps_unit_vectors_and_neighbours():
    x, truth = faces_of([10] * 20)
    reduced = pca_reduce(x, 32, sample=150)
    assert reduced.shape == (200, 32)
    assert np.allclose(np.linalg.norm(reduced, axis=1), 1.0)
    nearest = np.argsort(-(reduced @ reduced.T), axis=1)[:, 1]
    assert (nearest // 10 == np.arange(200) // 10).all()


def test_the_knn_graph_path_finds_the_same_clusters(monkeypatch):
    x, truth = faces_of([6] * 30)
    x = np.vstack([x, x[:1]])  # an exact duplicate: a zero distance must stay an edge
    settings = GroupingSettings(pca_dims=0, method="leaf", min_samples=1)
    exact = hdbscan_proposals(x, settings)
    monkeypatch.setattr("facebatch.people.grouping.KNN_MIN_FACES", 10)
    graph = hdbscan_proposals(x, settings)
    assert pairwise_prf(exact.tolist(), graph.tolist()).f == 1.0
    assert len(set(graph[:180].tolist())) == 30


def test_small_faces_are_left_out():
    x, _ = faces_of([4, 4])
    sides = np.array([80, 80, 80, 20, 80, 80, 80, 80], np.float32)
    labels = group_faces(x, sides, np.arange(8), GroupingSettings(pca_dims=0).on_scale(FACENET_SCALE)).labels
    assert labels[3] == -1 and labels[0] == labels[1] == labels[2] >= 0


def test_neighbours_are_their_own_nearest_excluded():
    x, _ = faces_of([5, 5])
    cols, sims = nearest_neighbours(x, 3)
    assert not (cols == np.arange(10)[:, None]).any()
    assert (cols[:5] < 5).all() and np.all(np.diff(sims, axis=1) <= 1e-6)


def test_approximate_neighbours_match_exact_ones(monkeypatch):
    """Big libraries take their neighbour graph from faiss: same graph, up to a few missed edges."""
    pytest.importorskip("faiss", reason="faiss-cpu is the optional 'large' extra")
    import facebatch.people.grouping as grouping

    rng = np.random.default_rng(3)
    centres = person_centres(300, seed=4)
    truth = rng.integers(0, 300, 6000)
    x = centres[truth] + 0.02 * rng.normal(size=(6000, 512))
    x = pca_reduce(x, 64, 6000)
    exact_cols, _ = nearest_neighbours(x, 10)
    monkeypatch.setattr(grouping, "ANN_MIN_FACES", 1000)
    approx_cols, approx_sims = nearest_neighbours(x, 10)
    assert not (approx_cols == np.arange(len(x))[:, None]).any()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_cols.tolist(), exact_cols.tolist())])
    assert recall > 0.9
    assert np.all(np.diff(approx_sims, axis=1) <= 1e-6)


def test_a_stranger_within_the_cap_but_outside_the_clusters_own_spread_stays_out():
    x, _ = faces_of([40], seed=3)
    centre = x.sum(axis=0) / np.linalg.norm(x.sum(axis=0))
    other = np.random.default_rng(9).normal(size=512)
    other -= (other @ centre) * centre
    other /= np.linalg.norm(other)
    cos = 1 - 0.85 ** 2 / 2  # 0.85 from the centre: within FaceNet's member distance (0.9 and growing)
    stranger = cos * centre + np.sqrt(1 - cos ** 2) * other
    faces = np.vstack([x, stranger])
    spread = group(faces)
    assert (spread[:40] == spread[0]).all() and spread[0] >= 0
    assert spread[40] != spread[0]  # the 40 photos scatter far less than 0.85 / 1.3
    assert group(faces, member_spread=None)[40] == spread[0]  # the absolute distance alone lets him in


def test_member_spread_is_validated():
    with pytest.raises(UsageError, match="--member-spread must be positive, got 0"):
        GroupingSettings(member_spread=0)


def test_a_burst_of_near_identical_shots_keeps_a_radius_the_persons_other_photos_fit():
    from facebatch.people.grouping import _Groups

    x, _ = faces_of([1, 12], seed=5)
    burst = x[0] + 0.002 * np.random.default_rng(1).normal(size=(6, 512))  # six shots of one moment
    faces = np.vstack([burst / np.linalg.norm(burst, axis=1, keepdims=True), x[1:]])
    labels = np.r_[np.zeros(6, np.int64), np.ones(12, np.int64)]
    groups = _Groups(faces, labels, np.arange(18), Constraints.none(18), 0.0, member_spread=1.3, radius_floor=0.75)
    members = np.arange(18)
    radius = groups.radius(members, groups.own_distance(members))
    assert radius[0] == 0.75  # 1.3 x the burst's own spread (about 0.06) would shut out every other photo
    assert radius[1] > 0.75  # a person's photos taken over time set their own, wider radius
