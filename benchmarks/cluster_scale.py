"""How clustering time, memory and quality grow with the library: synthetic faces shaped like LFW's.

Synthetic identities: centres drawn with the covariance of lfw-dev's per-person mean embeddings,
faces = centre + noise with the covariance of lfw-dev's within-person residuals, back on the unit
sphere; 1 to 20 faces per person (uniform) and 10% strangers with one face. So the spread between
and within people is the one measured on real faces, and PCA sees real structure.

Each configuration runs in a fresh process (peak RSS via resource.getrusage): the whole of
people.grouping (HDBSCAN, the member test, joins, adoption), one face per photo.

    .venv/bin/python benchmarks/cluster_scale.py --lfw /tmp/lfw-lib --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_common import DATASETS, library_faces  # noqa: E402


def lfw_shape(lfw: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean of person means, centred person means, within-person residuals) of lfw-dev subjects."""
    from facebatch.store import Library

    faces = library_faces(Library(lfw.resolve()), DATASETS / "lfw-dev", central=True)
    x = faces.embeddings[faces.subject]
    people = np.array([t for t, s in zip(faces.truth, faces.subject) if s])
    names, inverse = np.unique(people, return_inverse=True)
    means = np.stack([x[inverse == k].mean(axis=0) for k in range(len(names))])
    residuals = x - means[inverse]
    return means.mean(axis=0), means - means.mean(axis=0), residuals


def synthetic(n_faces: int, lfw: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre, between, within = lfw_shape(lfw)
    sizes: list[int] = []
    while sum(sizes) < n_faces:
        sizes.append(1 if rng.random() < 0.1 else int(rng.integers(1, 21)))
    sizes[-1] -= sum(sizes) - n_faces
    people = len(sizes)
    # Linear combinations with N(0, 1/k) weights reproduce the sample covariance of the rows.
    centres = centre + (rng.normal(size=(people, len(between))) / np.sqrt(len(between))) @ between
    truth = np.repeat(np.arange(people), sizes)
    x = np.empty((n_faces, centres.shape[1]), np.float32)
    for start in range(0, n_faces, 20_000):  # by blocks: 1M x 3,282 weights would be 24 GB at once
        stop = min(start + 20_000, n_faces)
        noise = (rng.normal(size=(stop - start, len(within))) / np.sqrt(len(within))) @ within
        block = centres[truth[start:stop]] + noise
        x[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, truth


def one(args: argparse.Namespace) -> None:
    from facebatch.people.evaluation import cluster_report
    from facebatch.people.grouping import GroupingSettings, group_faces

    x, truth = synthetic(args.n, args.lfw)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from facebatch.models.catalog import FACENET_SCALE

    # The synthetic faces take lfw-dev's spread in FaceNet's space: FaceNet's distances.
    settings = GroupingSettings(pca_dims=args.pca_dims, min_cluster_size=args.min_cluster_size,
                                min_samples=args.min_samples, method=args.method).on_scale(FACENET_SCALE)
    started = time.perf_counter()
    labels = group_faces(x, np.full(len(x), 100.0, np.float32), np.arange(len(x)), settings).labels
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = cluster_report(truth.tolist(), labels)
    print(json.dumps({"n": args.n, "pca": args.pca_dims, "seconds": seconds, "peak_mb": peak / 1024,
                      "extra_mb": (peak - base) / 1024, "F": r.pairwise.f, "P": r.pairwise.precision,
                      "R": r.pairwise.recall, "BCubed F": r.bcubed.f, "coverage": r.coverage}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="a scanned library of lfw-dev")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--pca", default="64", help="PCA dimensions to try (0: none)")
    parser.add_argument("--min-cluster-size", type=int, default=3)
    parser.add_argument("--min-samples", type=int, default=2)
    parser.add_argument("--method", default="eom")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pca-dims", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    from facebatch.people.grouping import KNN_MIN_FACES

    print("| faces | PCA dims | search | seconds | peak RSS MB | pairwise F | BCubed F | coverage |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for n in (int(v) for v in args.sizes.split(",")):
        search = "kNN graph" if n >= KNN_MIN_FACES else "HDBSCAN trees"
        for dims in (int(v) for v in args.pca.split(",")):
            command = [sys.executable, __file__, "--one", "--lfw", str(args.lfw), "--n", str(n), "--pca-dims",
                       str(dims), "--min-cluster-size", str(args.min_cluster_size), "--min-samples",
                       str(args.min_samples), "--method", args.method]
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {n:,} | {dims or 512} | {search} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['F']:.3f} "
                      f"| {r['BCubed F']:.3f} | {r['coverage']:.3f} |", flush=True)
            except subprocess.TimeoutExpired:
                print(f"| {n:,} | {dims or 512} | {search} | > {args.timeout:.0f} (stopped) | | | | |", flush=True)
            except subprocess.CalledProcessError as exc:
                print(f"| {n:,} | {dims or 512} | {search} | failed: {exc.stderr.strip().splitlines()[-1]} | | | | |",
                      flush=True)


if __name__ == "__main__":
    main()
