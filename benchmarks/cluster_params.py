"""Choose the clustering defaults: HDBSCAN's parameters against true identities.

Clusters every face of scanned libraries of lfw-dev and faces-dev (`facebatch scan` first) and
prints a markdown table per dataset: pairwise precision/recall/F (unclustered faces count as
singletons), BCubed F, coverage (share of scored faces in a cluster), clusters, seconds.

    .venv/bin/facebatch --library /tmp/lfw-lib scan ../shared/datasets/lfw-dev
    .venv/bin/facebatch --library /tmp/fd-lib scan ../shared/datasets/faces-dev
    .venv/bin/python benchmarks/cluster_params.py --lfw /tmp/lfw-lib --faces-dev /tmp/fd-lib
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_common import DATASETS, Faces, library_faces  # noqa: E402

from facebatch.people.clustering import ClusterSettings, cluster_faces  # noqa: E402
from facebatch.people.evaluation import cluster_report  # noqa: E402
from facebatch.store import Library  # noqa: E402


def score(faces: Faces, labels: np.ndarray) -> dict[str, float]:
    scored = np.array([t is not None for t in faces.truth])
    truth = [t for t in faces.truth if t is not None]
    r = cluster_report(truth, labels[scored])
    return {
        "P": r.pairwise.precision, "R": r.pairwise.recall, "F": r.pairwise.f, "BCubed F": r.bcubed.f,
        "coverage": r.coverage,
        "subject coverage": float((labels[faces.subject] >= 0).mean()),
        "clusters": len(set(labels[labels >= 0].tolist())),
    }


def grid(args: argparse.Namespace) -> list[ClusterSettings]:
    settings = []
    for mcs, ms, method, eps, size in itertools.product(args.min_cluster_size, args.min_samples, args.methods,
                                                        args.epsilon, args.min_face_size):
        settings.append(ClusterSettings(min_cluster_size=mcs, min_samples=ms, method=method, epsilon=eps,
                                        pca_dims=args.pca_dims, min_face_size=size))
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, help="library of lfw-dev")
    parser.add_argument("--faces-dev", type=Path, help="library of faces-dev")
    parser.add_argument("--min-cluster-size", type=lambda s: [int(v) for v in s.split(",")], default=[2, 3, 4])
    parser.add_argument("--min-samples", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 3])
    parser.add_argument("--methods", type=lambda s: s.split(","), default=["eom", "leaf"])
    parser.add_argument("--epsilon", type=lambda s: [float(v) for v in s.split(",")], default=[0.0])
    parser.add_argument("--min-face-size", type=lambda s: [float(v) for v in s.split(",")], default=[40.0])
    parser.add_argument("--pca-dims", type=int, default=64, help="0: full 512 dimensions")
    args = parser.parse_args()
    datasets = [(name, lib, DATASETS / name, central) for name, lib, central in
                (("lfw-dev", args.lfw, True), ("faces-dev", args.faces_dev, False)) if lib]
    for name, lib, folder, central in datasets:
        faces = library_faces(Library(lib.resolve()), folder, central)
        n_scored = sum(t is not None for t in faces.truth)
        print(f"\n### {name}: {len(faces.face_ids)} faces, {n_scored} scored, "
              f"{len({t for t in faces.truth if t and not t.startswith('stranger:')})} people\n")
        print("| min_cluster_size | min_samples | method | epsilon | min_face_size | pairwise P | pairwise R "
              "| pairwise F | BCubed F | coverage | clusters | seconds |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for settings in grid(args):
            started = time.perf_counter()
            labels, _ = cluster_faces(faces.embeddings, faces.sides, settings)
            seconds = time.perf_counter() - started
            s = score(faces, labels)
            print(f"| {settings.min_cluster_size} | {settings.min_samples} | {settings.method} | {settings.epsilon} "
                  f"| {settings.min_face_size:g} "
                  f"| {s['P']:.3f} | {s['R']:.3f} | {s['F']:.3f} | {s['BCubed F']:.3f} | {s['coverage']:.3f} "
                  f"| {s['clusters']} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
