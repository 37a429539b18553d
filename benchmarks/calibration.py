"""Calibrate the confidence: how often "the nearest named person" is right, by distance.

On the development mix (benchmarks/people_mix.py: lfw-many, lfw-dev, lfw-strangers, faces-dev),
a user is simulated: half of the people of lfw-many and lfw-dev (by a seeded draw) are named by
20% or 50% of their photos (at least one), three seeds each. Every other face of the mix (the
named people's other photos, the people nobody named, the strangers, background faces) is
compared with the centre of each named person's named faces; the nearest person is a suggestion,
right when it is the face's person. A logistic fit of "right" on the distance, on the `tune` half
of the identities, is the mapping of the libraries' model (models.catalog); the `check` half shows whether it holds
on people the fit never saw.

It prints: the fitted slope and midpoint; reliability on both halves (mean confidence against
the share right, by confidence band); at each confidence cut, the share of strangers who get a
name and the share of suggestions that are right; and the 1:1 verification answer at the cut on
6,000 LFW-style pairs of lfw-dev (10 folds of 300 same + 300 different, as benchmarks/lfw_pairs.py).

    .venv/bin/python benchmarks/calibration.py --libraries /work/libs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from people_mix import half, load_mix  # noqa: E402

FRIEND_SETS = ("lfw-many", "lfw-dev")
BANDS = [(0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 0.99), (0.99, 1.01)]


def simulate(mix, halves: np.ndarray, split: str, seed: int, share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance to the nearest named person, right?, is a stranger) for every unnamed face."""
    rng = np.random.default_rng(seed)
    x = mix.x.astype(np.float64)
    usable = (halves == split) & (mix.sides >= 40)
    friends = usable & mix.subject & np.isin(mix.dataset, FRIEND_SETS)
    named = np.zeros(len(x), bool)
    for person in np.unique(mix.truth[friends]):
        if rng.random() < 0.5:
            continue  # half the people are never named
        rows = np.flatnonzero(friends & (mix.truth == person))
        named[rng.choice(rows, max(1, int(round(share * len(rows)))), replace=False)] = True
    people = np.unique(mix.truth[named])
    centres = np.stack([x[named & (mix.truth == p)].sum(axis=0) for p in people])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    asked = np.flatnonzero(usable & ~named & (mix.truth != ""))
    similarity = x[asked] @ centres.T
    best = similarity.argmax(axis=1)
    distance = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * similarity[np.arange(len(asked)), best]))
    right = mix.truth[asked] == people[best]
    stranger = (mix.dataset[asked] == "lfw-strangers") & mix.subject[asked]
    return distance, right, stranger


def pooled(mix, halves: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    runs = [simulate(mix, halves, split, seed, share) for seed in range(3) for share in (0.2, 0.5)]
    return tuple(np.concatenate(parts) for parts in zip(*runs))  # type: ignore[return-value]


def lfw_pairs(mix, n_folds: int = 10, per_fold: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distances and same/different of LFW-style pairs of lfw-dev subject faces, each person in one fold."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero((mix.dataset == "lfw-dev") & mix.subject & (mix.truth != ""))
    people = np.unique(mix.truth[rows])
    folds = np.array_split(rng.permutation(people), n_folds)
    x = mix.x.astype(np.float64)
    distances, same = [], []
    for fold in folds:
        of = {p: rows[mix.truth[rows] == p] for p in fold}
        many = [p for p in fold if len(of[p]) >= 2]
        for _ in range(per_fold):
            a, b = rng.choice(of[many[rng.integers(len(many))]], 2, replace=False)
            distances.append(np.linalg.norm(x[a] - x[b]))
            same.append(True)
            p, q = rng.choice(list(fold), 2, replace=False)
            distances.append(np.linalg.norm(x[rng.choice(of[p])] - x[rng.choice(of[q])]))
            same.append(False)
    return np.array(distances), np.array(same)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libraries", type=Path, required=True, help="folder holding one library per set")
    parser.add_argument("--cache", type=Path, help="embeddings of the mix [default: /tmp, per libraries and content]")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    from facebatch.store import Library

    scale = Library((args.libraries / "lfw-many").resolve()).scale()
    SLOPE, MIDPOINT = scale.slope, scale.midpoint  # noqa: N806
    mix = load_mix(args.libraries, args.cache)
    halves = np.array([half(t, p) for t, p in zip(mix.truth, mix.photo)])
    data = {split: pooled(mix, halves, split) for split in ("tune", "check")}
    d, right, _ = data["tune"]
    fit = LogisticRegression(C=1e6).fit(d[:, None], right)
    slope = -float(fit.coef_[0, 0])
    midpoint = float(fit.intercept_[0]) / slope
    print(f"fitted on tune: confidence = 1 / (1 + exp({slope:.2f} * (d - {midpoint:.4f})))")
    print(f"in the model's scale:       confidence = 1 / (1 + exp({SLOPE:.2f} * (d - {MIDPOINT:.4f})))\n")

    def confidence(distance: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(np.clip(SLOPE * (distance - MIDPOINT), -50, 50)))

    print("| half | confidence band | faces | mean confidence | share right |\n|---|---|---|---|---|")
    for split, (d, right, _) in data.items():
        c = confidence(d)
        for lo, hi in BANDS:
            band = (c >= lo) & (c < hi)
            if band.any():
                print(f"| {split} | {lo:.2f}-{min(hi, 1):.2f} | {band.sum()} | {c[band].mean():.3f} | {right[band].mean():.3f} |")
    print("\n| half | cut: confidence >= | distance <= | strangers given a name | suggestions right | "
          "named people's faces found |\n|---|---|---|---|---|---|")
    for split, (d, right, stranger) in data.items():
        for level in (0.5, 0.7, 0.8, 0.9):
            cut = MIDPOINT + np.log(1 / level - 1) / SLOPE
            taken = d <= cut
            print(f"| {split} | {level} | {cut:.3f} | {taken[stranger].mean():.2%} | {right[taken].mean():.3f} | "
                  f"{(taken & right).sum() / max(1, right.sum()):.3f} |")
    distances, same = lfw_pairs(mix)
    print("\n| 1:1 pairs of lfw-dev (3,000 same, 3,000 different) | threshold | accuracy | same accepted (TAR) | "
          "different accepted (FAR) |\n|---|---|---|---|---|")
    for label, threshold in (("the cut, confidence 0.8", MIDPOINT + np.log(1 / 0.8 - 1) / SLOPE),
                             ("confidence 0.5", MIDPOINT), ("verify's threshold", scale.verify_threshold)):
        accepted = distances <= threshold
        print(f"| {label} | {threshold:.3f} | {np.mean(accepted == same):.4f} | {accepted[same].mean():.4f} | "
              f"{accepted[~same].mean():.4f} |")


if __name__ == "__main__":
    main()
