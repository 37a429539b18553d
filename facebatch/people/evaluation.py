"""Quality metrics: clustering against true identities, and face verification on labelled pairs.

Pure numpy, no model: every function takes labels or distances and is O(n log n), so they work on
a 100k-face library (pair counts come from contingency tables, never from an n x n matrix).

Clustering conventions: `predicted` holds one cluster id per item, -1 for an item left
unclustered; every unclustered item counts as a cluster of its own (a singleton), so leaving a
face out never looks like merging it with the other unclustered faces.

Verification conventions: a pair's score is the Euclidean distance between the two L2-normalised
embeddings (0 .. 2); the verdict is "same" when distance <= threshold. A NaN distance marks a pair
that could not be compared (no face found): it counts as a wrong answer in every accuracy, and it
is left out of threshold selection, ROC AUC and TAR@FAR (which need a distance).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facebatch.errors import InputError
from facebatch.schema import LIVE_STATUSES

if TYPE_CHECKING:
    from facebatch.store import Library

DEFAULT_FOLDS = 10
DEFAULT_FAR = 1e-3


# --------------------------------------------------------------------------- clustering


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f: float


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _contingency(truth: Sequence[Hashable], predicted: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_ij, truth class of each cell, predicted cluster of each cell) over non-empty cells only.

    Unclustered items (-1) get fresh cluster ids, one each.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} labels, predicted {len(predicted)}")
    if len(truth) == 0:
        raise ValueError("no items to evaluate")
    codes: dict[Hashable, int] = {}
    t = np.fromiter((codes.setdefault(label, len(codes)) for label in truth), np.int64, len(truth))
    raw = np.asarray(predicted, dtype=np.int64).reshape(-1)
    if (raw < -1).any():
        raise ValueError("cluster ids must be >= 0, or -1 for unclustered")
    unclustered = raw == -1
    p = np.unique(raw, return_inverse=True)[1].reshape(-1).astype(np.int64)  # dense 0 .. k-1
    p[unclustered] = p.max() + 1 + np.arange(int(unclustered.sum()))  # one fresh cluster each
    width = int(p.max()) + 1
    cells, counts = np.unique(t * width + p, return_counts=True)
    return counts.astype(np.float64), cells // width, cells % width


def _pairs(n: np.ndarray) -> float:
    return float((n * (n - 1) / 2).sum())


def pairwise_prf(truth: Sequence[Hashable], predicted: Sequence[int]) -> PRF:
    """Pair-counting precision/recall/F1 over all item pairs.

    precision: of the pairs put in one cluster, the share that are one identity; recall: of the
    pairs of one identity, the share put in one cluster. With no pair predicted (all singletons)
    precision is 1 (nothing was merged wrongly); with no true pair recall is 1.
    """
    n_ij, t, p = _contingency(truth, predicted)
    together = _pairs(n_ij)
    predicted_pairs = _pairs(np.bincount(p, weights=n_ij))
    true_pairs = _pairs(np.bincount(t, weights=n_ij))
    precision = together / predicted_pairs if predicted_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    return PRF(precision, recall, _f1(precision, recall))


def bcubed_prf(truth: Sequence[Hashable], predicted: Sequence[int]) -> PRF:
    """BCubed (Bagga & Baldwin) precision/recall/F1: per-item shares, averaged over items.

    An item's precision is the share of its cluster that has its identity (itself included), its
    recall the share of its identity that is in its cluster. F is the harmonic mean of the two
    averages.
    """
    n_ij, t, p = _contingency(truth, predicted)
    cluster_size = np.bincount(p, weights=n_ij)[p]
    class_size = np.bincount(t, weights=n_ij)[t]
    total = n_ij.sum()
    precision = float((n_ij**2 / cluster_size).sum() / total)
    recall = float((n_ij**2 / class_size).sum() / total)
    return PRF(precision, recall, _f1(precision, recall))


@dataclass(frozen=True)
class ClusterReport:
    n_faces: int  # labelled faces evaluated
    n_identities: int
    n_clusters: int  # clusters (not counting unclustered faces) holding at least one labelled face
    coverage: float  # share of labelled faces that are in a cluster
    pairwise: PRF
    bcubed: PRF


def cluster_report(truth: Sequence[Hashable], predicted: Sequence[int]) -> ClusterReport:
    """Everything `facebatch eval clusters` reports, for labelled faces and their cluster ids."""
    p = np.asarray(predicted, dtype=np.int64).reshape(-1)
    return ClusterReport(
        n_faces=len(truth),
        n_identities=len(set(truth)),
        n_clusters=len(np.unique(p[p >= 0])),
        coverage=float((p >= 0).mean()) if len(p) else 0.0,
        pairwise=pairwise_prf(truth, predicted),
        bcubed=bcubed_prf(truth, predicted),
    )


# --------------------------------------------------------------------------- verification


def _as_arrays(distances: Sequence[float], same: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    s = np.asarray(same, dtype=bool).reshape(-1)
    if d.shape != s.shape:
        raise ValueError(f"{len(d)} distances but {len(s)} labels")
    return d, s


def accuracy_at(distances: Sequence[float], same: Sequence[bool], threshold: float) -> float:
    """Share of pairs answered right by `distance <= threshold`; NaN distances count as wrong."""
    d, s = _as_arrays(distances, same)
    if len(d) == 0:
        return math.nan
    with np.errstate(invalid="ignore"):
        right = np.where(np.isnan(d), False, (d <= threshold) == s)
    return float(right.mean())


def best_threshold(distances: Sequence[float], same: Sequence[bool]) -> tuple[float, float]:
    """(threshold, accuracy) of the single threshold that answers most pairs right.

    Exact: every cut between two sorted distances is tried (no grid). The threshold is the
    midpoint of the gap it falls in; among equally good cuts the middle one is taken. Pairs with
    a NaN distance are wrong whatever the threshold (the accuracy counts them).
    """
    d, s = _as_arrays(distances, same)
    valid = ~np.isnan(d)
    if not valid.any():
        return math.nan, 0.0
    dv, sv = d[valid], s[valid]
    order = np.argsort(dv, kind="stable")
    dv, sv = dv[order], sv[order]
    n = len(dv)
    # cut k: the k smallest distances are called "same"; only cuts between distinct values count.
    same_below = np.concatenate([[0], np.cumsum(sv)])
    diff_above = (~sv).sum() - np.concatenate([[0], np.cumsum(~sv)])
    correct = same_below + diff_above
    allowed = np.ones(n + 1, bool)
    allowed[1:n] = dv[1:] > dv[:-1]
    candidates = np.flatnonzero(allowed & (correct == correct[allowed].max()))
    k = int(candidates[len(candidates) // 2])
    if k == 0:
        threshold = float(np.nextafter(dv[0], -np.inf))
    elif k == n:
        threshold = float(dv[-1])
    else:
        threshold = float((dv[k - 1] + dv[k]) / 2)
        if threshold >= dv[k]:  # adjacent floats: the midpoint rounded up
            threshold = float(dv[k - 1])
    return threshold, float(correct[k] / len(d))


def default_folds(n_pairs: int, n_folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """Fold of each pair when the file has none: round robin (pair i in fold i % n_folds), so a
    file sorted same-first still gets both kinds of pair in every fold."""
    return np.arange(n_pairs) % n_folds


def kfold_accuracy(
    distances: Sequence[float], same: Sequence[bool], folds: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, threshold) per fold, each fold's threshold chosen on all the other folds.

    Folds are listed in sorted order of their labels.
    """
    d, s = _as_arrays(distances, same)
    f = np.asarray(folds).reshape(-1)
    if f.shape != d.shape:
        raise ValueError(f"{len(d)} pairs but {len(f)} fold labels")
    labels = np.unique(f)
    if len(labels) < 2:
        raise ValueError("k-fold accuracy needs at least 2 folds")
    accuracies, thresholds = [], []
    for label in labels:
        test = f == label
        threshold, _ = best_threshold(d[~test], s[~test])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(d[test], s[test], threshold))
    return np.array(accuracies), np.array(thresholds)


def roc_auc(distances: Sequence[float], same: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random different pair is farther apart than a
    random same pair (ties count half). NaN distances are left out; NaN without both kinds."""
    d, s = _as_arrays(distances, same)
    valid = ~np.isnan(d)
    d, s = d[valid], s[valid]
    n_same, n_diff = int(s.sum()), int((~s).sum())
    if n_same == 0 or n_diff == 0:
        return math.nan
    # Mann-Whitney U from average ranks (ties share their mean rank).
    values, inverse, counts = np.unique(d, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    mean_rank = upper - (counts - 1) / 2  # 1-based mean rank of each distinct value
    rank_sum_diff = mean_rank[inverse.reshape(-1)][~s].sum()
    u = rank_sum_diff - n_diff * (n_diff + 1) / 2  # pairs (same, diff) with diff farther
    return float(u / (n_same * n_diff))


@dataclass(frozen=True)
class TarAtFar:
    tar: float  # share of same pairs accepted
    far: float  # share of different pairs accepted at that threshold (<= the target)
    threshold: float  # the largest distance threshold whose FAR stays within the target


def tar_at_far(distances: Sequence[float], same: Sequence[bool], far: float = DEFAULT_FAR) -> TarAtFar:
    """True-accept rate at the largest threshold that accepts at most `far` of the different pairs.

    With n different pairs at most floor(far * n) may be accepted, so FAR=1e-3 needs >= 1000
    different pairs to mean anything (with fewer, the threshold sits below every different pair).
    NaN distances are left out.
    """
    d, s = _as_arrays(distances, same)
    valid = ~np.isnan(d)
    d, s = d[valid], s[valid]
    different = np.sort(d[~s])
    if len(different) == 0 or not s.any():
        return TarAtFar(math.nan, math.nan, math.nan)
    allowed = int(math.floor(far * len(different) + 1e-9))
    if allowed >= len(different):
        threshold = float(different[-1])
    else:
        threshold = float(np.nextafter(different[allowed], -np.inf))
    return TarAtFar(
        tar=float((d[s] <= threshold).mean()),
        far=float((different <= threshold).mean()),
        threshold=threshold,
    )


@dataclass(frozen=True)
class VerificationReport:
    n_pairs: int
    n_same: int
    n_failed: int  # pairs without a distance (a photo without a face): counted as wrong
    accuracy: float  # mean over folds, each fold's threshold chosen on the other folds
    accuracy_std: float  # population std over folds
    fold_accuracies: tuple[float, ...]
    fold_thresholds: tuple[float, ...]
    best_threshold: float  # the one threshold best on all pairs
    best_accuracy: float
    auc: float
    tar: TarAtFar


def verification_report(
    distances: Sequence[float],
    same: Sequence[bool],
    folds: Sequence[Hashable] | None = None,
    n_folds: int = DEFAULT_FOLDS,
    far: float = DEFAULT_FAR,
) -> VerificationReport:
    """Everything `facebatch eval pairs` reports. folds=None: `default_folds(n, n_folds)`."""
    d, s = _as_arrays(distances, same)
    if len(d) == 0:
        raise ValueError("no pairs to evaluate")
    f = default_folds(len(d), n_folds) if folds is None else np.asarray(folds).reshape(-1)
    accuracies, thresholds = kfold_accuracy(d, s, f)
    threshold, accuracy = best_threshold(d, s)
    return VerificationReport(
        n_pairs=len(d),
        n_same=int(s.sum()),
        n_failed=int(np.isnan(d).sum()),
        accuracy=float(accuracies.mean()),
        accuracy_std=float(accuracies.std()),
        fold_accuracies=tuple(accuracies.tolist()),
        fold_thresholds=tuple(thresholds.tolist()),
        best_threshold=threshold,
        best_accuracy=accuracy,
        auc=roc_auc(d, s),
        tar=tar_at_far(d, s, far),
    )


# --------------------------------------------------------------------------- library clustering


@dataclass(frozen=True)
class LibraryClusterEvaluation:
    report: ClusterReport | None  # None when no labelled photo has a face in the library
    n_labelled: int  # rows of the truth file
    not_in_library: tuple[str, ...]  # labelled photos the library has not scanned (or that failed)
    without_face: tuple[str, ...]  # labelled photos scanned without a face found
    group_photos: tuple[str, ...] = ()  # photos of several people (`a;b`): which face is whom is unknown

    def lines(self) -> list[str]:
        evaluated = self.n_labelled - len(self.not_in_library) - len(self.without_face) - len(self.group_photos)
        groups = f", {len(self.group_photos)} group photos left out" if self.group_photos else ""
        lines = [
            f"labelled      {self.n_labelled} photos: {evaluated} faces evaluated, {len(self.not_in_library)} not in "
            f"the library, {len(self.without_face)} without a face{groups}"
        ]
        r = self.report
        if r is not None:
            lines += [
                f"identities    {r.n_identities}, clusters {r.n_clusters} (holding labelled faces)",
                f"coverage      {r.coverage:.4f} of labelled faces are in a cluster",
                f"pairwise      precision {r.pairwise.precision:.4f}  recall {r.pairwise.recall:.4f}  "
                f"F {r.pairwise.f:.4f} (unclustered faces count as singletons)",
                f"BCubed        precision {r.bcubed.precision:.4f}  recall {r.bcubed.recall:.4f}  F {r.bcubed.f:.4f}",
            ]
        for label, paths in (("not in the library", self.not_in_library), ("without a face", self.without_face),
                             ("group photos (a;b)", self.group_photos)):
            if paths:
                shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
                lines.append(f"{label}: {shown}")
        return lines

    def to_json(self) -> dict:
        r = self.report
        out: dict = {
            "labelled_photos": self.n_labelled,
            "not_in_library": list(self.not_in_library),
            "group_photos": list(self.group_photos),
            "without_face": list(self.without_face),
        }
        if r is not None:
            out |= {
                "faces": r.n_faces,
                "identities": r.n_identities,
                "clusters": r.n_clusters,
                "coverage": r.coverage,
                "pairwise": {"precision": r.pairwise.precision, "recall": r.pairwise.recall, "f": r.pairwise.f},
                "bcubed": {"precision": r.bcubed.precision, "recall": r.bcubed.recall, "f": r.bcubed.f},
            }
        return out


def nearest_centre(boxes: Sequence[Sequence[float]], width: int, height: int) -> int:
    """Index of the box whose centre is nearest the image centre (LFW's labelled face)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return int(np.argmin(np.hypot((b[:, 0] + b[:, 2]) / 2 - width / 2, (b[:, 1] + b[:, 3]) / 2 - height / 2)))


def read_truth(csv_path: Path) -> list[tuple[str, str]]:
    """(path, identity) rows of a `path,identity` CSV. A first row with a cell `path` is a header;
    then the columns named `path` and `identity` are used (so dataset manifests with more columns
    work), else the first two."""
    try:
        with open(csv_path, newline="") as handle:
            rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(handle), start=1) if any(row)]
    except OSError as exc:
        raise InputError(f"cannot read truth file {csv_path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"truth file {csv_path} is not a CSV file: {exc}") from None
    path_col, identity_col = 0, 1
    if rows and "path" in (c.lower() for c in rows[0][1]):
        header = [c.lower() for c in rows.pop(0)[1]]
        if "identity" not in header:
            raise InputError(f"{csv_path}: the header has no `identity` column")
        path_col, identity_col = header.index("path"), header.index("identity")
    truth = []
    for line, row in rows:
        if len(row) <= max(path_col, identity_col) or not row[path_col] or not row[identity_col]:
            raise InputError(f"{csv_path} line {line}: expected path,identity")
        truth.append((row[path_col], row[identity_col]))
    if not truth:
        raise InputError(f"truth file {csv_path} has no rows")
    return truth


def evaluate_library_clusters(
    library: Library, truth: Sequence[tuple[str, Hashable]], root: Path, cluster_ids: Mapping[str, int]
) -> LibraryClusterEvaluation:
    """Clustering quality of the library's faces against labelled photos.

    Each labelled photo (path relative to `root`, matched to the library's absolute paths) labels
    the face nearest its centre; `cluster_ids` maps face_id -> cluster id (-1 or absent:
    unclustered). A photo of several people (identity `a;b`, as dataset manifests write group
    photos) is left out and listed: which of its faces is whom is unknown.
    """
    photos = library.read_table("photos", ["path", "width", "height", "status"]).to_pylist()
    size = {p["path"]: (p["width"], p["height"]) for p in photos if p["status"] in LIVE_STATUSES}
    faces: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    table = library.read_faces(["face_id", "path", "box"])
    for face_id, path, box in zip(*(table.column(c).to_pylist() for c in ("face_id", "path", "box"))):
        faces.setdefault(path, []).append((face_id, box))
    by_real: dict[str, str] | None = None
    labels, clusters, not_in_library, without_face, groups = [], [], [], [], []
    for path, identity in truth:
        if ";" in str(identity):
            groups.append(path)
            continue
        full = os.path.abspath(root / path)
        if full not in size:
            if by_real is None:  # the scan may have reached it through a symlink, or the other way round
                by_real = {os.path.realpath(p): p for p in size}
            full = by_real.get(os.path.realpath(full), full)
        if full not in size:
            not_in_library.append(path)
            continue
        if full not in faces:
            without_face.append(path)
            continue
        ids, boxes = zip(*faces[full])
        nearest = nearest_centre(boxes, *size[full])
        labels.append(identity)
        clusters.append(int(cluster_ids.get(ids[nearest], -1)))
    report = cluster_report(labels, clusters) if labels else None
    return LibraryClusterEvaluation(report, len(truth), tuple(not_in_library), tuple(without_face), tuple(groups))
