"""SFace in int8 against fp32: time a face on one thread, cosine to fp32, and lfw-dev pair accuracy.

Every face of a library of lfw-dev scanned with SFace is aligned again from its stored landmarks
and embedded by both files (models.sface, models.sface_int8); the pairs are calibration.py's 6,000
LFW-style pairs (10 folds, each fold's threshold chosen on the others), on the centred embeddings.

    facebatch --library /tmp/sface-lfw-dev scan ../shared/datasets/lfw-dev/images
    .venv/bin/python benchmarks/sface_int8.py --library /tmp/sface-lfw-dev
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calibration import lfw_pairs  # noqa: E402
from cluster_common import library_faces  # noqa: E402
from scan_throughput import cpu_flags  # noqa: E402

from facebatch.imageload import decode_photo, read_photo_bytes  # noqa: E402
from facebatch.models.means import population_mean  # noqa: E402
from facebatch.models.sface import OnnxSFaceEmbedder, aligned_face, prepare_sface  # noqa: E402
from facebatch.store import Library  # noqa: E402

LFW_DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "lfw-dev"


def aligned_crops(library: Library) -> np.ndarray:
    faces = library.read_faces(["path", "landmarks"])
    crops, last, photo = [], None, None
    for path, landmarks in zip(faces["path"].to_pylist(), faces["landmarks"].to_pylist()):
        if path != last:
            photo, last = decode_photo(read_photo_bytes(path)), path
        crops.append(aligned_face(photo, landmarks))
    return np.stack(crops)


def ms_per_face(embedder: OnnxSFaceEmbedder, crops: np.ndarray) -> float:
    embedder.embed(crops)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        embedder.embed(crops)
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(crops)


def pair_accuracy(x: np.ndarray, truth: np.ndarray, subject: np.ndarray) -> float:
    mix = types.SimpleNamespace(x=x, truth=truth, subject=subject, dataset=np.array(["lfw-dev"] * len(x), object))
    distances, same = lfw_pairs(mix)
    folds = np.arange(len(distances)) // 600
    accuracies = []
    for k in range(10):
        train, test = folds != k, folds == k
        threshold = max(np.unique(distances[train]), key=lambda t: ((distances[train] <= t) == same[train]).mean())
        accuracies.append(((distances[test] <= threshold) == same[test]).mean())
    return 100 * float(np.mean(accuracies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", type=Path, required=True, help="a library of lfw-dev scanned with SFace")
    args = parser.parse_args()
    library = Library(args.library.resolve())
    faces = library_faces(library, LFW_DEV.resolve(), central=True)
    truth = np.array([t or "" for t in faces.truth], object)
    crops = aligned_crops(library)
    mean = population_mean("sface", None)
    print("| SFace | ms a face, 1 thread, batch 16 | cosine to fp32: mean | 1st percentile | min | pair accuracy (10 folds) |"
          "\n|---|---|---|---|---|---|")
    reference = None
    for precision in ("fp32", "int8"):
        model = prepare_sface(precision)
        x = OnnxSFaceEmbedder(model, threads=2).embed(crops)
        reference = x if reference is None else reference
        cosine = np.sum(x * reference, axis=1)
        centred = x - mean
        centred /= np.linalg.norm(centred, axis=1, keepdims=True)
        speed = ms_per_face(OnnxSFaceEmbedder(model, threads=1, batch_size=16), crops[:16])
        print(f"| {precision} | {speed:.1f} | {cosine.mean():.4f} | {np.percentile(cosine, 1):.4f} | {cosine.min():.4f} | "
              f"{pair_accuracy(centred, truth, faces.subject):.2f}% |", flush=True)
    print(f"\n{len(crops)} faces; CPU flags {cpu_flags()}; reproduce: .venv/bin/python benchmarks/sface_int8.py "
          f"--library {args.library}")


if __name__ == "__main__":
    main()
