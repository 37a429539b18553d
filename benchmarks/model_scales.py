"""Measure each embedding model's distance scale, and what it does for people and strangers.

For every model, libraries of the four development sets (one folder per model, as
benchmarks/people_mix.py reads them) are measured on the `tune` half of the identities; the `check`
half shows whether the numbers hold on people they never saw:

- confidence: the logistic fit of "the nearest named person is right" on the distance
  (benchmarks/calibration.py's simulated users);
- verify threshold: the best 1:1 accuracy on 6,000 LFW-style pairs of lfw-dev (10 folds);
- member distance: the distance that keeps as many friends' faces within reach of the centre of
  their own other faces as FaceNet's tuned 0.9 keeps in FaceNet's space (recall matched), so a
  model that separates people better lets fewer strangers in at the same recall;
- merge distance: likewise, the share of same-person half-centre pairs (each person's photos
  split in two) that FaceNet's 0.75 joins;
- member growth: FaceNet's 0.01 per doubling, in proportion to the member distance.

It prints each model's scale as the catalogue declares it (models/catalog.py), then pair accuracy
and TAR at FAR 1e-3 (10 folds), and the people figures on both halves with that scale
(pairwise/BCubed F on all-each, strangers inside a friend's cluster on all-each and the mix,
strangers named after naming every friend's cluster at the cut).

    .venv/bin/python benchmarks/model_scales.py --libraries facenet=/work/libs/facenet \\
        --libraries facenet-centred=/work/libs/facenet-centred ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration import lfw_pairs, pooled  # noqa: E402
from people_mix import FRIEND_SETS, half, load_mix, measure  # noqa: E402

# FaceNet's tuned member and merge distances (people_mix's grid): the recall the others are matched to.
FACENET_MEMBER, FACENET_MERGE, FACENET_GROWTH = 0.9, 0.75, 0.01


def own_centre_distances(x: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each face's distance to the centre of its person's other faces (people with >= 3 faces)."""
    out = []
    for person in np.unique(truth[rows]):
        faces = rows[truth[rows] == person]
        if len(faces) < 3:
            continue
        total = x[faces].sum(axis=0)
        others = total[None, :] - x[faces]
        others /= np.linalg.norm(others, axis=1, keepdims=True)
        out.append(np.linalg.norm(x[faces] - others, axis=1))
    return np.concatenate(out)


def half_centre_distances(x: np.ndarray, truth: np.ndarray, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """Distance between the centres of two random halves of each person's faces (>= 6 faces)."""
    rng = np.random.default_rng(seed)
    out = []
    for person in np.unique(truth[rows]):
        faces = rng.permutation(rows[truth[rows] == person])
        if len(faces) < 6:
            continue
        a, b = (x[part].sum(axis=0) for part in np.array_split(faces, 2))
        out.append(np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b)))
    return np.array(out)


def friends(mix, halves: np.ndarray, split: str) -> np.ndarray:
    return np.flatnonzero((halves == split) & mix.subject & np.isin(mix.dataset, FRIEND_SETS) & (mix.truth != "")
                          & (mix.sides >= 40))


def fit_confidence(mix, halves: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    d, right, _ = pooled(mix, halves, "tune")
    fit = LogisticRegression(C=1e6).fit(d[:, None], right)
    slope = -float(fit.coef_[0, 0])
    return slope, float(fit.intercept_[0]) / slope


def measure_scale(mix, facenet_mix) -> dict:
    """The scale of the model of `mix`, recall-matched to FaceNet's (`facenet_mix`) on the tune half."""
    from facebatch.people.evaluation import verification_report

    halves = np.array([half(t, p) for t, p in zip(mix.truth, mix.photo)])
    fn_halves = np.array([half(t, p) for t, p in zip(facenet_mix.truth, facenet_mix.photo)])
    x, fx = mix.x.astype(np.float64), facenet_mix.x.astype(np.float64)
    tune, fn_tune = friends(mix, halves, "tune"), friends(facenet_mix, fn_halves, "tune")
    member_recall = float((own_centre_distances(fx, facenet_mix.truth, fn_tune) <= FACENET_MEMBER).mean())
    merge_recall = float((half_centre_distances(fx, facenet_mix.truth, fn_tune) <= FACENET_MERGE).mean())
    member = float(np.quantile(own_centre_distances(x, mix.truth, tune), member_recall))
    merge = float(np.quantile(half_centre_distances(x, mix.truth, tune), merge_recall))
    slope, midpoint = fit_confidence(mix, halves)
    distances, same = lfw_pairs(mix)
    report = verification_report(distances, same)
    return {"slope": round(slope, 2), "midpoint": round(midpoint, 4), "verify_threshold": round(report.best_threshold, 3),
            "member_distance": round(member, 3), "merge_distance": round(merge, 3),
            "member_growth": round(FACENET_GROWTH * member / FACENET_MEMBER, 4),
            "recall_matched": {"member": round(member_recall, 4), "merge": round(merge_recall, 4)}}


def pair_figures(mix) -> dict:
    from facebatch.people.evaluation import verification_report

    distances, same = lfw_pairs(mix)
    report = verification_report(distances, same)
    return {"accuracy": report.accuracy, "accuracy_std": report.accuracy_std, "tar": report.tar.tar}


def strangers_named(mix, split: str, scale: dict) -> tuple[int, int]:
    """Every friend named by all their photos on one half: strangers within the cut of a friend's centre."""
    halves = np.array([half(t, p) for t, p in zip(mix.truth, mix.photo)])
    x = mix.x.astype(np.float64)
    named = friends(mix, halves, split)
    people = np.unique(mix.truth[named])
    centres = np.stack([x[named[mix.truth[named] == p]].sum(axis=0) for p in people])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    strangers = np.flatnonzero((halves == split) & mix.subject & (mix.dataset == "lfw-strangers"))
    nearest = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (x[strangers] @ centres.T).max(axis=1)))
    cut = scale["midpoint"] + np.log(1 / 0.8 - 1) / scale["slope"]
    return int((nearest <= cut).sum()), len(strangers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libraries", action="append", required=True, metavar="MODEL=DIR",
                        help="one libraries folder per model (the four sets each); facenet= first")
    parser.add_argument("--no-people", action="store_true", help="skip the clustering figures")
    args = parser.parse_args()
    folders = dict(item.split("=", 1) for item in args.libraries)
    mixes = {name: load_mix(Path(folder)) for name, folder in folders.items()}
    facenet_mix = mixes["facenet"]
    print("| model | slope | midpoint | verify threshold | member | merge | growth | recall matched (member, merge) |"
          "\n|---|---|---|---|---|---|---|---|")
    scales = {}
    for name, mix in mixes.items():
        scales[name] = s = measure_scale(mix, facenet_mix)
        print(f"| {name} | {s['slope']} | {s['midpoint']} | {s['verify_threshold']} | {s['member_distance']} | "
              f"{s['merge_distance']} | {s['member_growth']} | {s['recall_matched']['member']}, "
              f"{s['recall_matched']['merge']} |", flush=True)
    print(json.dumps(scales))
    print("\n| model | pair accuracy (10 folds) | TAR at FAR 1e-3 | half | all-each pairwise F | BCubed F | strangers in a "
          "friend's cluster: all-each | mix | strangers named at the cut |\n|---|---|---|---|---|---|---|---|---|")
    for name, mix in mixes.items():
        pairs = pair_figures(mix)
        s = scales[name]
        settings = {k: s[k] for k in ("member_distance", "merge_distance", "member_growth")}
        for split in ("tune", "check"):
            if args.no_people:
                people = {"pw_f": np.nan, "bc_f": np.nan, "strangers_in_friend": 0, "strangers": 1}
                mixed = dict(people)
            else:
                run = argparse.Namespace(libraries=Path(folders[name]), cache=None)
                people = measure(run, "all-each", split, settings)
                mixed = measure(run, "mix", split, settings)
            named, strangers = strangers_named(mix, split, s)
            print(f"| {name} | {pairs['accuracy']:.4f} ± {pairs['accuracy_std']:.4f} | {pairs['tar']:.4f} | {split} | "
                  f"{people['pw_f']:.3f} | {people['bc_f']:.3f} | "
                  f"{people['strangers_in_friend']}/{people['strangers']} "
                  f"({100 * people['strangers_in_friend'] / max(1, people['strangers']):.2f}%) | "
                  f"{mixed['strangers_in_friend']}/{mixed['strangers']} "
                  f"({100 * mixed['strangers_in_friend'] / max(1, mixed['strangers']):.2f}%) | "
                  f"{named}/{strangers} ({100 * named / max(1, strangers):.2f}%) |", flush=True)


if __name__ == "__main__":
    main()
