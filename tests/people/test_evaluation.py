"""Metric functions against values worked out by hand (the working is in each test's comments)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from conftest import LIBRARY_MODEL, MODEL, run
from facebatch.people.evaluation import (
    PRF,
    accuracy_at,
    bcubed_prf,
    best_threshold,
    cluster_report,
    default_folds,
    kfold_accuracy,
    pairwise_prf,
    roc_auc,
    tar_at_far,
    verification_report,
)
from facebatch.store import Library

# truth a a a b b c, clusters 0 0 1 1 1 and one unclustered face.
# contingency: (a,0)=2 (a,1)=1 (b,1)=2 (c,alone)=1
TRUTH = ["a", "a", "a", "b", "b", "c"]
PREDICTED = [0, 0, 1, 1, 1, -1]


def approx(prf: PRF) -> tuple[float, float, float]:
    return pytest.approx((prf.precision, prf.recall, prf.f))


def test_pairwise_prf_by_hand():
    # pairs together and same identity: C(2,2) + C(1,2) + C(2,2) = 2
    # pairs put together: C(2,2) + C(3,2) = 4; true pairs: C(3,2) + C(2,2) = 4
    assert (pairwise_prf(TRUTH, PREDICTED).precision, pairwise_prf(TRUTH, PREDICTED).recall) == (0.5, 0.5)
    assert approx(pairwise_prf(TRUTH, PREDICTED)) == (0.5, 0.5, 0.5)


def test_bcubed_prf_by_hand():
    # precision per item: a,a in cluster 0: 1, 1; a in cluster 1: 1/3; b,b: 2/3, 2/3; c alone: 1
    #   -> (4 + 1/3 + 4/3) / 6 = 7/9
    # recall per item: a,a: 2/3, 2/3; a: 1/3; b,b: 1, 1; c: 1 -> (5/3 + 3) / 6 = 7/9
    assert approx(bcubed_prf(TRUTH, PREDICTED)) == (7 / 9, 7 / 9, 7 / 9)


def test_unclustered_faces_are_singletons_not_one_cluster():
    # a a a a, two clustered together, two left out.
    # pairwise: 1 pair predicted and right, 6 true pairs -> P 1, R 1/6, F 2/7
    assert approx(pairwise_prf("aaaa", [0, 0, -1, -1])) == (1, 1 / 6, 2 / 7)
    # bcubed: precision 1 everywhere; recall 1/2 1/2 1/4 1/4 -> 3/8; F = 2 * 3/8 / (11/8) = 6/11
    assert approx(bcubed_prf("aaaa", [0, 0, -1, -1])) == (1, 3 / 8, 6 / 11)
    # -1 must not merge the two left-out faces of different people
    assert pairwise_prf("ab", [-1, -1]).precision == 1.0
    assert approx(bcubed_prf("ab", [-1, -1])) == (1, 1, 1)


def test_degenerate_clusterings():
    # everything unclustered: no predicted pairs (precision 1 by convention), no recall
    assert approx(pairwise_prf("aabb", [-1] * 4)) == (1, 0, 0)
    # everything in one cluster: every true pair found, 2 of 6 predicted pairs right
    assert approx(pairwise_prf("aabb", [7] * 4)) == (1 / 3, 1, 0.5)
    # bcubed of one cluster: precision 1/2 each, recall 1 -> F 2/3
    assert approx(bcubed_prf("aabb", [7] * 4)) == (0.5, 1, 2 / 3)
    # perfect, with arbitrary labels of any hashable type
    assert approx(pairwise_prf([("x", 1), ("x", 1), 3], [5, 5, 9])) == (1, 1, 1)
    assert approx(bcubed_prf([("x", 1), ("x", 1), 3], [5, 5, 9])) == (1, 1, 1)


def test_cluster_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="no items"):
        pairwise_prf([], [])
    with pytest.raises(ValueError, match="truth has 2 labels, predicted 1"):
        bcubed_prf("ab", [0])
    with pytest.raises(ValueError, match=">= 0, or -1"):
        pairwise_prf("ab", [0, -2])


def test_cluster_report():
    report = cluster_report(TRUTH, PREDICTED)
    assert (report.n_faces, report.n_identities, report.n_clusters) == (6, 3, 2)
    assert report.coverage == pytest.approx(5 / 6)
    assert report.pairwise == pairwise_prf(TRUTH, PREDICTED)
    assert report.bcubed == bcubed_prf(TRUTH, PREDICTED)


def brute_force(truth, predicted):
    """O(n^2) definitions, for checking the contingency-table versions on random data."""
    n = len(truth)
    cluster = [p if p >= 0 else -(i + 2) for i, p in enumerate(predicted)]
    same_t = np.array([[truth[i] == truth[j] for j in range(n)] for i in range(n)])
    same_p = np.array([[cluster[i] == cluster[j] for j in range(n)] for i in range(n)])
    off = ~np.eye(n, dtype=bool)
    both = (same_t & same_p & off).sum()
    pair_p = both / (same_p & off).sum() if (same_p & off).any() else 1.0
    pair_r = both / (same_t & off).sum() if (same_t & off).any() else 1.0
    b_p = np.mean([(same_t[i] & same_p[i]).sum() / same_p[i].sum() for i in range(n)])
    b_r = np.mean([(same_t[i] & same_p[i]).sum() / same_t[i].sum() for i in range(n)])
    return (pair_p, pair_r), (b_p, b_r)


@pytest.mark.parametrize("seed", range(5))
def test_cluster_metrics_match_the_definitions(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 6, 40).tolist()
    predicted = rng.integers(-1, 5, 40).tolist()
    (pp, pr), (bp, br) = brute_force(truth, predicted)
    assert (pairwise_prf(truth, predicted).precision, pairwise_prf(truth, predicted).recall) == pytest.approx((pp, pr))
    assert (bcubed_prf(truth, predicted).precision, bcubed_prf(truth, predicted).recall) == pytest.approx((bp, br))


def test_cluster_metrics_are_fast_on_100k_faces():
    rng = np.random.default_rng(0)
    truth = [f"person{i}" for i in rng.integers(0, 5000, 100_000)]
    predicted = rng.integers(-1, 6000, 100_000)
    started = time.perf_counter()
    cluster_report(truth, predicted)
    assert time.perf_counter() - started < 5  # ~0.2 s; an O(n^2) pass would take minutes


# Verification example: distances 0.1 0.4 0.5 0.9 1.2 1.3, same T T F T F F.
D = [0.1, 0.4, 0.5, 0.9, 1.2, 1.3]
S = [True, True, False, True, False, False]


def test_best_threshold_by_hand():
    # cut after k smallest: right answers k=0..6: 3 4 5 4 5 4 3; best 5/6 at k=2 and k=4,
    # the middle of the tied cuts is k=4: threshold (0.9 + 1.2) / 2
    threshold, accuracy = best_threshold(D, S)
    assert threshold == pytest.approx(1.05)
    assert accuracy == pytest.approx(5 / 6)
    assert accuracy_at(D, S, threshold) == pytest.approx(5 / 6)
    assert accuracy_at(D, S, 0.45) == pytest.approx(5 / 6)
    assert accuracy_at(D, S, 0.0) == pytest.approx(3 / 6)


def test_best_threshold_never_splits_equal_distances():
    # 0.5 appears as same and different: both must get the same answer
    threshold, accuracy = best_threshold([0.5, 0.5, 0.5, 1.0], [True, True, False, False])
    assert accuracy == pytest.approx(3 / 4)
    assert 0.5 <= threshold < 1.0
    # every pair the same: accept them all
    threshold, accuracy = best_threshold([0.2, 0.3], [True, True])
    assert accuracy == 1.0 and threshold >= 0.3
    # every pair different: accept none
    threshold, accuracy = best_threshold([0.2, 0.3], [False, False])
    assert accuracy == 1.0 and threshold < 0.2


def test_failed_pairs_count_as_wrong():
    d = D + [math.nan, math.nan]
    s = S + [True, False]
    threshold, accuracy = best_threshold(d, s)
    assert threshold == pytest.approx(1.05)  # chosen on the pairs that have a distance
    assert accuracy == pytest.approx(5 / 8)
    assert accuracy_at(d, s, 10.0) == pytest.approx(3 / 8)
    report = verification_report(d, s, folds=[0, 1, 0, 1, 0, 1, 0, 1])
    assert report.n_failed == 2 and report.n_pairs == 8 and report.n_same == 4
    assert report.auc == pytest.approx(8 / 9)  # the NaN pairs are left out of AUC


def test_kfold_accuracy_by_hand():
    # fold 0 = pairs 0 2 4 (0.1 T, 0.5 F, 1.2 F), fold 1 = pairs 1 3 5 (0.4 T, 0.9 T, 1.3 F)
    # fold 0's threshold from fold 1: cut between 0.9 and 1.3 = 1.1 -> 0.1 right, 0.5 wrong, 1.2 right
    # fold 1's threshold from fold 0: cut between 0.1 and 0.5 = 0.3 -> 0.4 wrong, 0.9 wrong, 1.3 right
    accuracies, thresholds = kfold_accuracy(D, S, [0, 1, 0, 1, 0, 1])
    assert accuracies == pytest.approx([2 / 3, 1 / 3])
    assert thresholds == pytest.approx([1.1, 0.3])
    report = verification_report(D, S, folds=["x", "y", "x", "y", "x", "y"])
    assert report.accuracy == pytest.approx(0.5)
    assert report.accuracy_std == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_accuracy(D, S, [0] * 6)


def test_default_folds_are_round_robin():
    assert default_folds(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    report = verification_report(D, S, n_folds=2)  # the same folds as above
    assert report.fold_accuracies == pytest.approx((2 / 3, 1 / 3))


def test_roc_auc_by_hand():
    # same 0.1 0.4 0.9 vs different 0.5 1.2 1.3: 3 + 3 + 2 of 9 (same, different) pairs ordered right
    assert roc_auc(D, S) == pytest.approx(8 / 9)
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc([0.1, 0.9], [True, False]) == 1.0
    assert roc_auc([0.9, 0.1], [True, False]) == 0.0
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))


def test_tar_at_far_by_hand():
    # 3 different pairs; FAR 1/3 allows one accepted: threshold just below 1.2 -> all 3 same pairs
    result = tar_at_far(D, S, far=1 / 3)
    assert (result.tar, result.far) == pytest.approx((1.0, 1 / 3))
    assert 0.5 <= result.threshold < 1.2
    # FAR 0.2 allows none: threshold just below 0.5 -> 0.1 and 0.4 accepted, 0.9 not
    result = tar_at_far(D, S, far=0.2)
    assert (result.tar, result.far) == pytest.approx((2 / 3, 0.0))
    assert 0.4 <= result.threshold < 0.5


def test_tar_at_far_on_2000_different_pairs():
    rng = np.random.default_rng(1)
    different = rng.uniform(1.0, 2.0, 2000)
    same = np.linspace(0.0, 1.5, 100)
    result = tar_at_far(np.concatenate([same, different]), [True] * 100 + [False] * 2000, far=1e-3)
    second_smallest = np.sort(different)[2]  # 2 of 2000 may be accepted
    assert result.far == pytest.approx(2 / 2000)
    assert result.threshold < second_smallest
    assert result.tar == pytest.approx((same <= result.threshold).mean())


# --------------------------------------------------------------------------- library clustering

@pytest.fixture
def labelled_library(tmp_path):
    """Photos 200x100: ann a1 a2, bob b1 (plus a corner face that is not bob) b2, empty (no face)."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from facebatch.schema import FACES_SCHEMA, PHOTOS_SCHEMA

    root = tmp_path / "photos"
    centre, corner = [80.0, 30.0, 120.0, 70.0], [0.0, 0.0, 30.0, 30.0]
    faces = {"a1": [("fa1", centre)], "a2": [("fa2", centre)], "b1": [("fx", corner), ("fb1", centre)],
             "b2": [("fb2", centre)], "empty": []}
    now = datetime.now(timezone.utc)
    photo_rows, face_rows = [], []
    for name, found in faces.items():
        path = str(root / f"{name}.jpg")
        photo_rows.append({"photo_id": f"p{name}", "path": path, "size_bytes": 1, "mtime": 1, "width": 200,
                           "height": 100, "n_faces": len(found), "status": "ok" if found else "no_faces",
                           "scanned_at": now})
        for index, (face_id, box) in enumerate(found):
            face_rows.append({"face_id": face_id, "photo_id": f"p{name}", "path": path, "face_index": index,
                              "box": box, "score": 0.99, "landmarks": [0.0] * 10,
                              "embedding": np.zeros(512, np.float32), "model": MODEL})
    library = Library(tmp_path / "lib")
    library.create(LIBRARY_MODEL)
    library.write_shard(pa.Table.from_pylist(photo_rows, PHOTOS_SCHEMA), pa.Table.from_pylist(face_rows, FACES_SCHEMA),
                        {}, MODEL)
    truth = tmp_path / "truth.csv"
    truth.write_text("path,identity,notes\na1.jpg,ann,x\na2.jpg,ann,\nb1.jpg,bob,\nb2.jpg,bob,\n"
                     "empty.jpg,bob,\nmissing.jpg,ann,\nb1.jpg,ann;bob,group\n")
    return library, root, truth


# fb1 (not the corner face fx) labels b1; fb2 is unclustered.
CLUSTERS = {"fa1": 1, "fa2": 1, "fx": 1, "fb1": 2, "fb2": -1}


def test_evaluate_library_clusters_by_hand(labelled_library):
    from facebatch.people.evaluation import evaluate_library_clusters, read_truth

    library, root, truth = labelled_library
    result = evaluate_library_clusters(library, read_truth(truth), root, CLUSTERS)
    assert (result.n_labelled, result.not_in_library, result.without_face) == (7, ("missing.jpg",), ("empty.jpg",))
    assert result.group_photos == ("b1.jpg",)  # a;b: several people, left out (not a 3rd identity)
    report = result.report
    # labels ann ann bob bob, clusters 1 1 2 -1: pairwise 1 of 1 predicted pair right, 1 of 2 true pairs
    assert approx(report.pairwise) == (1, 0.5, 2 / 3)
    # bcubed: precision 1 everywhere; recall 1 1 1/2 1/2 = 3/4; F = 6/7
    assert approx(report.bcubed) == (1, 0.75, 6 / 7)
    assert (report.n_faces, report.n_identities, report.n_clusters, report.coverage) == (4, 2, 2, 0.75)
    assert result.lines()[0] == ("labelled      7 photos: 4 faces evaluated, 1 not in the library, 1 without a face, "
                                 "1 group photos left out")


def test_eval_clusters_cli(labelled_library, monkeypatch):
    import json

    import facebatch.people.clustering

    library, root, truth = labelled_library
    monkeypatch.setattr(Library, "require_clusters", lambda self: None)
    monkeypatch.setattr(facebatch.people.clustering, "read_assignments", lambda lib: CLUSTERS)
    args = ["--library", str(library.root), "eval", "clusters", str(truth), "--root", str(root)]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "labelled      7 photos: 4 faces evaluated, 1 not in the library, 1 without a face, 1 group photos left out",
        "identities    2, clusters 2 (holding labelled faces)",
        "coverage      0.7500 of labelled faces are in a cluster",
        "pairwise      precision 1.0000  recall 0.5000  F 0.6667 (unclustered faces count as singletons)",
        "BCubed        precision 1.0000  recall 0.7500  F 0.8571",
        "not in the library: missing.jpg",
        "without a face: empty.jpg",
        "group photos (a;b): b1.jpg",
    ]
    out = json.loads(run(*args, "--json").output)
    assert out["bcubed"] == pytest.approx({"precision": 1.0, "recall": 0.75, "f": 6 / 7})
    assert (out["faces"], out["clusters"], out["identities"], out["coverage"]) == (4, 2, 2, 0.75)


def test_eval_clusters_needs_clusters(labelled_library):
    library, root, truth = labelled_library
    result = run("--library", library.root, "eval", "clusters", truth)
    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_read_truth(tmp_path):
    from facebatch.errors import FacebatchError
    from facebatch.people.evaluation import read_truth

    plain = tmp_path / "plain.csv"
    plain.write_text("x/1.jpg,ann\n\nx/2.jpg, bob\n")
    assert read_truth(plain) == [("x/1.jpg", "ann"), ("x/2.jpg", "bob")]
    reordered = tmp_path / "reordered.csv"
    reordered.write_text("identity,source,path\nann,web,1.jpg\n")
    assert read_truth(reordered) == [("1.jpg", "ann")]
    for content, message in (("path,who\n1.jpg,ann\n", "no `identity` column"), ("1.jpg\n", "line 1: expected path,identity"),
                             ("path,identity\n", "has no rows")):
        bad = tmp_path / "bad.csv"
        bad.write_text(content)
        with pytest.raises(FacebatchError, match=message):
            read_truth(bad)
