"""Choose the suggestion distance: how often "the nearest labelled face's person" is right, by distance.

Half of each lfw-dev person's photos play the labelled faces (every other photo, by name); every
other subject face takes its nearest labelled face's person. For each distance threshold: the
share of faces that get a suggestion (coverage) and the share of suggestions that are right
(precision). Faces of people with no labelled photo are in the count too (they can only be wrong).

    .venv/bin/python benchmarks/cluster_suggest.py --lfw /tmp/lfw-lib
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_common import DATASETS, library_faces  # noqa: E402

from facebatch.store import Library  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--thresholds", default="0.6,0.7,0.8,0.85,0.9,0.95,1.0,1.1")
    args = parser.parse_args()
    faces = library_faces(Library(args.lfw.resolve()), DATASETS / "lfw-dev", central=True)
    x = faces.embeddings[faces.subject]
    truth = np.array([t for t, s in zip(faces.truth, faces.subject) if s])
    # Every other face of a person is labelled; a person with an odd count gets the extra one.
    rank = np.zeros(len(truth), int)
    seen: dict[str, int] = {}
    for i, t in enumerate(truth):
        rank[i] = seen.get(t, 0)
        seen[t] = rank[i] + 1
    labelled = rank % 2 == 0
    # A third of the people are never labelled: their faces should get no suggestion.
    people = sorted(set(truth.tolist()))
    hidden = set(people[::3])
    labelled &= np.array([t not in hidden for t in truth])
    queries = ~labelled
    similarity = x[queries] @ x[labelled].T
    nearest = similarity.argmax(axis=1)
    distance = np.sqrt(np.maximum(0, 2 - 2 * similarity[np.arange(len(nearest)), nearest]))
    right = truth[labelled][nearest] == truth[queries]
    print(f"{int(queries.sum())} query faces ({sum(t in hidden for t in truth[queries])} of unlabelled people), "
          f"{int(labelled.sum())} labelled\n")
    print("| distance <= | suggested | precision |")
    print("|---|---|---|")
    for t in (float(v) for v in args.thresholds.split(",")):
        take = distance <= t
        print(f"| {t} | {take.mean():.3f} | {right[take].mean() if take.any() else float('nan'):.3f} |")


if __name__ == "__main__":
    main()
