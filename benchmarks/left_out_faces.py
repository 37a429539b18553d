"""Why the last misses stay out: the faces clustering leaves out, against the strangers it keeps out.

Runs the default grouping on the scenarios of benchmarks/people_mix.py (same libraries, same
halves) and asks of every face left unclustered: how close is it to the faces of the cluster it
would join (its k-th nearest member, k = 1, 2, 3)? A true face of a person left out (profile,
sunglasses, a 64-px face) is useful only if it is nearer its own cluster than strangers are to
theirs: the first table counts, per distance, the left-out true faces that an adoption rule at
that distance would take back and the strangers it would let into a friend's cluster.

The second table is the other lever: a member distance stricter for small groups (below 10 faces,
`shrink` less per halving), which keeps strangers out of acquaintances' clusters (people with
3-9 photos) at the cost of their recall.

    .venv/bin/python benchmarks/left_out_faces.py --libraries /work/libs-int8
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import people_mix  # noqa: E402

from facebatch.people import grouping  # noqa: E402

THRESHOLDS = (0.85, 0.90, 0.95, 1.00)


def left_out(mix: people_mix.Mix, rows: np.ndarray, labels: np.ndarray, k: int) -> tuple[list[float], list[float]]:
    """k-th nearest member distance of each left-out subject face to the cluster it is nearest:
    (true faces whose person has a cluster, strangers whose nearest cluster is a friend's)."""
    x = grouping.normalise_rows(mix.x[rows].astype(np.float64))
    truth, dataset, subject = mix.truth[rows], mix.dataset[rows], mix.subject[rows]
    owner = _owners(labels, truth, subject)
    clustered = np.flatnonzero(labels >= 0)
    own, strangers = [], []
    for face in np.flatnonzero((labels < 0) & subject).tolist():
        distance = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * x[clustered] @ x[face]))
        best, best_cluster = np.inf, -1
        for cluster in np.unique(labels[clustered]).tolist():
            near = np.sort(distance[labels[clustered] == cluster])
            kth = near[min(k, len(near)) - 1]
            if kth < best:
                best, best_cluster = kth, cluster
        if owner.get(best_cluster) == truth[face] and truth[face]:
            own.append(best)
        elif dataset[face] == "lfw-strangers":
            strangers.append(best)
    return own, strangers


def _owners(labels: np.ndarray, truth: np.ndarray, subject: np.ndarray) -> dict[int, str]:
    owners = {}
    for cluster in np.unique(labels[labels >= 0]).tolist():
        names, counts = np.unique(truth[(labels == cluster) & subject].astype(str), return_counts=True)
        if len(names):
            owners[cluster] = names[np.argmax(counts)]
    return owners


def small_group_distances(mix: people_mix.Mix, rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the centre of a small cluster's (2-9 faces of its owner) true faces: each owner
    face to the others', and each stranger in it to the owner's faces."""
    x = grouping.normalise_rows(mix.x[rows].astype(np.float64))
    truth, dataset, subject = mix.truth[rows], mix.dataset[rows], mix.subject[rows]
    members, strangers = [], []
    for cluster, name in _owners(labels, truth, subject).items():
        own = np.flatnonzero((labels == cluster) & (truth == name) & subject)
        if not 2 <= len(own) <= 9 or dataset[own[0]] == "lfw-strangers":
            continue
        for face in own.tolist():
            members.append(grouping.person_distance(x[face], x[own[own != face]]))
        intruders = np.flatnonzero((labels == cluster) & (dataset == "lfw-strangers") & subject)
        strangers += [grouping.person_distance(x[face], x[own]) for face in intruders.tolist()]
    return np.array(members), np.array(strangers)


@contextlib.contextmanager
def small_groups_stricter(shrink: float) -> Iterator[None]:
    """The member distance less `shrink` per halving below 10 faces (a trial, not a setting)."""
    default = grouping._limit

    def limit(base: float, size: np.ndarray) -> np.ndarray:
        size = np.asarray(size, np.float64)
        return default(base, size) - shrink * np.log2(10.0 / np.clip(size, 2.0, 10.0))

    grouping._limit = limit
    try:
        yield
    finally:
        grouping._limit = default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--libraries", type=Path, required=True)
    parser.add_argument("--scenarios", default="all-each,ten-each,mix")
    parser.add_argument("--shrink", default="0,0.02,0.04")
    args = parser.parse_args()
    mix = people_mix.load_mix(args.libraries)
    settings = people_mix.on_scale(grouping.GroupingSettings(), args)  # the libraries' model's distances
    halves = ("tune", "check")

    @functools.cache
    def default_labels(name: str, half: str) -> tuple[np.ndarray, np.ndarray]:
        rows = people_mix.scenario(mix, name, half)
        return rows, grouping.group_faces(mix.x[rows], mix.sides[rows], mix.photo[rows], settings).labels

    print("| scenario | half | k | left-out true faces | strangers left out | "
          + " | ".join(f"< {t:.2f}: faces / strangers" for t in THRESHOLDS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(THRESHOLDS))
    for name in args.scenarios.split(","):
        for half in halves:
            rows, labels = default_labels(name, half)
            for k in (1, 2, 3):
                own, strangers = (np.array(v) for v in left_out(mix, rows, labels, k))
                cells = " | ".join(f"{(own < t).sum()} / {(strangers < t).sum()}" for t in THRESHOLDS)
                print(f"| {name} | {half} | {k} | {len(own)} | {len(strangers)} | {cells} |", flush=True)
    print()
    print("| half | true faces of small clusters: distance to their centre, 50th / 90th / 97th percentile "
          "| strangers in them: 10th / 50th / 90th |")
    print("|---|---|---|")
    for half in halves:
        rows, labels = default_labels("mix", half)
        members, strangers = small_group_distances(mix, rows, labels)
        print(f"| {half} | " + " / ".join(f"{v:.2f}" for v in np.percentile(members, [50, 90, 97]))
              + f" ({len(members)}) | " + " / ".join(f"{v:.2f}" for v in np.percentile(strangers, [10, 50, 90]))
              + f" ({len(strangers)}) |", flush=True)
    print()
    print("| small groups: member distance less per halving below 10 faces | scenario | half | pairwise F "
          "| BCubed F | strangers in a friend's cluster |")
    print("|---|---|---|---|---|---|")
    for shrink in (float(s) for s in args.shrink.split(",")):
        with small_groups_stricter(shrink):
            for name in ("mix", "lfw-dev"):
                for half in halves:
                    rows = people_mix.scenario(mix, name, half)
                    labels = grouping.group_faces(mix.x[rows], mix.sides[rows], mix.photo[rows], settings).labels
                    r = people_mix.score(mix, rows, labels)
                    strangers = f"{r['strangers_in_friend']}/{r['strangers']}" if r["strangers"] else "-"
                    print(f"| {shrink:.2f} | {name} | {half} | {r['pw_f']:.3f} | {r['bc_f']:.3f} | {strangers} |",
                          flush=True)


if __name__ == "__main__":
    main()
