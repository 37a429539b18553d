"""Verification quality on lfw-dev: seeded LFW-style pairs, several preprocessing variants.

Builds 10 folds x (300 same + 300 different) pairs from ../shared/datasets/lfw-dev (each person
in one fold only, like LFW's view 2), then measures, for the central face of every photo:

    library      the embeddings `facebatch scan` stored (the reference)
    box          the scan's crop (MTCNN box + margin 44 at 182, centre 160), re-embedded here
    box+flip     the same plus the mirror image's embedding (`eval pairs --flip`)
    aligned      5-landmark similarity transform to a template, then the same 182/160 crop
    aligned+flip

Detections come from a library scanned beforehand (no MTCNN here), so every variant sees the
same faces:

    facebatch --library /tmp/lfw-lib scan ../shared/datasets/lfw-dev/images
    .venv/bin/python benchmarks/lfw_pairs.py --library /tmp/lfw-lib --write-pairs /tmp/lfw-dev-pairs.csv

The pairs file reproduces the `library`/`box` and `box+flip` rows through the CLI (with detection):

    facebatch eval pairs /tmp/lfw-dev-pairs.csv --root ../shared/datasets/lfw-dev/images [--flip]

Prints a markdown table: accuracy mean ± std over folds (each fold's threshold chosen on the
other 9), the per-fold gain over the first row, the best single threshold and its accuracy, ROC
AUC, TAR at FAR=1e-3 and its threshold.

Result (casia-webface, 6,000 pairs, 3,233 photos, seed 0; 2-core CPU, ~14 min per crop kind):

| variant | accuracy (10-fold) | vs first row, per fold | best threshold | best accuracy | ROC AUC | TAR@FAR=1e-3 | threshold at FAR=1e-3 |
|---|---|---|---|---|---|---|---|
| library | 98.63 ± 0.30 | +0.00 ± 0.00 | 1.108 | 98.77 | 0.9991 | 94.67 | 1.026 |
| box | 98.63 ± 0.30 | +0.00 ± 0.00 | 1.108 | 98.77 | 0.9991 | 94.67 | 1.026 |
| box+flip | 98.68 ± 0.39 | +0.05 ± 0.26 | 1.115 | 98.83 | 0.9991 | 95.73 | 1.040 |
| aligned | 97.90 ± 0.44 | -0.73 ± 0.47 | 1.058 | 97.95 | 0.9980 | 89.93 | 0.953 |
| aligned+flip | 97.93 ± 0.37 | -0.70 ± 0.44 | 1.069 | 98.02 | 0.9982 | 91.20 | 0.953 |

So the scan's box crop stays: flip is within fold noise (+0.05 ± 0.26), and landmark alignment
loses 0.7 points. (The weights were trained on MTCNN box crops resized to a square, which
stretches faces horizontally; a similarity transform keeps the true aspect ratio, so the aligned
faces look narrower to the network than anything it was trained on.) `library` == `box` checks
that the crops here are the scan's.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from facebatch.people.embeddings import embeddings_matrix  # noqa: E402
from facebatch.models.facenet import ALIGNED_SIZE, INPUT_SIZE, FaceEmbedder, face_crop  # noqa: E402
from facebatch.people.evaluation import verification_report  # noqa: E402
from facebatch.imageload import DecodedPhoto, decode_photo, read_photo_bytes  # noqa: E402
from facebatch.store import Library  # noqa: E402
from facebatch.people.verification import central_face  # noqa: E402
from facebatch.models.detection import Face  # noqa: E402
from facebatch.models.weights import resolve_weights  # noqa: E402

DATASET = PROJECT.parent / "shared" / "datasets" / "lfw-dev"


# --------------------------------------------------------------------------- pairs


def make_pairs(manifest: Path, n_folds: int, per_fold: int, seed: int) -> list[tuple[str, str, int, int]]:
    """(path1, path2, same, fold): per fold `per_fold` same and `per_fold` different pairs of that
    fold's people (every person in exactly one fold), drawn without repeats."""
    photos: dict[str, list[str]] = defaultdict(list)
    with open(manifest, newline="") as handle:
        for row in csv.DictReader(handle):
            photos[row["identity"]].append(row["path"])
    rng = np.random.default_rng(seed)
    people = sorted(photos)
    order = rng.permutation(len(people))
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for rank, index in enumerate(order):
        folds[rank % n_folds].append(people[index])
    pairs = []
    for fold, members in enumerate(folds):
        same = [(a, b) for p in members for i, a in enumerate(photos[p]) for b in photos[p][i + 1 :]]
        if len(same) < per_fold:
            raise SystemExit(f"fold {fold} has only {len(same)} same pairs, {per_fold} wanted")
        chosen_same = [same[i] for i in rng.choice(len(same), per_fold, replace=False)]
        different: set[tuple[str, str]] = set()
        while len(different) < per_fold:
            p, q = rng.choice(len(members), 2, replace=False)
            a = photos[members[p]][rng.integers(len(photos[members[p]]))]
            b = photos[members[q]][rng.integers(len(photos[members[q]]))]
            different.add((a, b))
        for (a, b), (c, d) in zip(chosen_same, sorted(different)):
            pairs += [(a, b, 1, fold), (c, d, 0, fold)]
    return pairs


# --------------------------------------------------------------------------- alignment (experimental)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift; no reflection) src -> dst."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    norm = (s**2).sum()
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum() / norm
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / norm
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (md - rot @ ms)[:, None]])


def box_frame_template(faces: list[Face]) -> np.ndarray:
    """Mean landmark positions in the 182x182 box+margin frame, made left-right symmetric: the
    alignment then keeps the scale and position the network saw in training, minus the roll."""
    points = []
    for face in faces:
        x1, y1, x2, y2 = face.box
        grow_x = 44 * (x2 - x1) / (ALIGNED_SIZE - 44) / 2
        grow_y = 44 * (y2 - y1) / (ALIGNED_SIZE - 44) / 2
        lm = np.array(face.landmarks).reshape(5, 2)
        points.append(
            np.column_stack(
                [
                    (lm[:, 0] - (x1 - grow_x)) * ALIGNED_SIZE / (x2 - x1 + 2 * grow_x),
                    (lm[:, 1] - (y1 - grow_y)) * ALIGNED_SIZE / (y2 - y1 + 2 * grow_y),
                ]
            )
        )
    mean = np.mean(points, axis=0)
    mirrored = mean[[1, 0, 2, 4, 3]].copy()
    mirrored[:, 0] = ALIGNED_SIZE - mirrored[:, 0]
    return (mean + mirrored) / 2


def aligned_crop(photo: DecodedPhoto, landmarks: tuple[float, ...], template: np.ndarray) -> np.ndarray:
    src = np.array(landmarks, np.float64).reshape(5, 2) * photo.scale
    m = similarity(src, template)
    full = np.vstack([m, [0, 0, 1]])
    inverse = np.linalg.inv(full)[:2]  # output pixel -> input pixel, as PIL's AFFINE wants
    image = photo.image.transform(
        (ALIGNED_SIZE, ALIGNED_SIZE), Image.Transform.AFFINE, inverse.reshape(-1).tolist(), Image.Resampling.BILINEAR
    )
    offset = (ALIGNED_SIZE - INPUT_SIZE) // 2
    return np.asarray(image, np.uint8)[offset : offset + INPUT_SIZE, offset : offset + INPUT_SIZE]


# --------------------------------------------------------------------------- main


def central_faces(library: Library, images: Path) -> dict[str, tuple[Face, np.ndarray]]:
    """relative path -> (central face, stored embedding)."""
    sizes = {r["path"]: (r["width"], r["height"]) for r in library.read_table("photos", ["path", "width", "height"]).to_pylist()}
    by_path: dict[str, list[tuple[Face, np.ndarray]]] = defaultdict(list)
    table = library.read_faces(["path", "face_index", "box", "score", "landmarks", "embedding"])
    embeddings = embeddings_matrix(table)
    for row, emb in zip(table.select(["path", "box", "score", "landmarks"]).to_pylist(), embeddings):
        face = Face(tuple(row["box"]), row["score"], tuple(row["landmarks"]))
        by_path[row["path"]].append((face, emb))
    out = {}
    for path, faces in by_path.items():
        width, height = sizes[path]
        out[Path(path).relative_to(images).as_posix()] = faces[central_face([f for f, _ in faces], width, height)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--library", type=Path, required=True, help="a library scanned from DATASET/images")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--per-fold", type=int, default=300, help="same (and as many different) pairs per fold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-pairs", type=Path, help="also write the pairs as path1,path2,same,fold")
    parser.add_argument("--cache", type=Path, help="npz of embeddings per variant, reused when present")
    parser.add_argument("--variants", default="library,box,box+flip,aligned,aligned+flip")
    args = parser.parse_args()

    images = args.dataset / "images"
    pairs = make_pairs(args.dataset / "manifest.csv", args.folds, args.per_fold, args.seed)
    if args.write_pairs:
        with open(args.write_pairs, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path1", "path2", "same", "fold"])
            writer.writerows(pairs)
    faces = central_faces(Library(args.library), images)
    photos = sorted({p for a, b, _, _ in pairs for p in (a, b)})
    missing = [p for p in photos if p not in faces]
    usable = [p for p in photos if p in faces]
    template = box_frame_template([faces[p][0] for p in usable])
    print(f"{len(pairs)} pairs, {len(photos)} photos, {len(missing)} without a face; template (182 frame):")
    print("  " + ", ".join(f"({x:.2f}, {y:.2f})" for x, y in template))

    cache = dict(np.load(args.cache)) if args.cache and args.cache.exists() else {}
    embedder = None
    variants = args.variants.split(",")
    for kind in ("box", "aligned"):
        if not any(v.startswith(kind) for v in variants) or f"{kind}-plain" in cache:
            continue
        if embedder is None:
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
            embedder = FaceEmbedder(resolve_weights(), "cpu", 64)
        started = time.perf_counter()
        crops = []
        for path in usable:
            photo = decode_photo(read_photo_bytes(str(images / path)))
            face = faces[path][0]
            crops.append(face_crop(photo, face.box) if kind == "box" else aligned_crop(photo, face.landmarks, template))
        crops = np.stack(crops)
        cache[f"{kind}-plain"] = embedder.embed(crops)
        cache[f"{kind}-mirror"] = embedder.embed(np.ascontiguousarray(crops[:, :, ::-1]))
        print(f"  {kind}: {len(crops)} crops embedded twice in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        if args.cache:
            np.savez(args.cache, **cache)

    same = np.array([s for _, _, s, _ in pairs], bool)
    folds = [f for _, _, _, f in pairs]
    index = {p: i for i, p in enumerate(usable)}
    print()
    print(
        "| variant | accuracy (10-fold) | vs first row, per fold | best threshold | best accuracy | ROC AUC "
        "| TAR@FAR=1e-3 | threshold at FAR=1e-3 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    for variant in variants:
        if variant == "library":
            emb = np.stack([faces[p][1] for p in usable])
        else:
            kind = variant.split("+")[0]
            emb = cache[f"{kind}-plain"]
            if variant.endswith("+flip"):
                emb = emb + cache[f"{kind}-mirror"]
                emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        distances = np.array(
            [
                np.linalg.norm(emb[index[a]].astype(np.float64) - emb[index[b]]) if a in index and b in index else np.nan
                for a, b, _, _ in pairs
            ]
        )
        r = verification_report(distances, same, folds)
        per_fold = np.array(r.fold_accuracies)
        reference = per_fold if reference is None else reference
        gain = 100 * (per_fold - reference)
        print(
            f"| {variant} | {100 * r.accuracy:.2f} ± {100 * r.accuracy_std:.2f} | {gain.mean():+.2f} ± {gain.std():.2f} "
            f"| {r.best_threshold:.3f} | "
            f"{100 * r.best_accuracy:.2f} | {r.auc:.4f} | {100 * r.tar.tar:.2f} | {r.tar.threshold:.3f} |"
        )
    print()
    command = f"python benchmarks/lfw_pairs.py --library {args.library}"
    if (args.folds, args.per_fold, args.seed) != (10, 300, 0):
        command += f" --folds {args.folds} --per-fold {args.per_fold} --seed {args.seed}"
    print(f"Reproduce: facebatch --library {args.library} scan {images} && {command}")


if __name__ == "__main__":
    main()
