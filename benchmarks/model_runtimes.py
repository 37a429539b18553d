"""FaceNet per runtime and precision: speed, distance to torch fp32, and LFW-protocol pair accuracy.

The faces are the central face of every photo of 6,000 lfw-dev pairs (10 folds x 300 same + 300
different, benchmarks/lfw_pairs.py's seeded pairs), cropped from the boxes of a library scanned
beforehand, so every runtime embeds the same crops:

    facebatch --library /work/libs/lfw-dev scan ../shared/datasets/lfw-dev/images
    .venv/bin/python benchmarks/model_runtimes.py --library /work/libs/lfw-dev [--rounds 3]

Speed: faces/s at batch 32 on one thread (what one scan worker has), the runtimes taking turns
for --rounds rounds, median. Cosine: each face's embedding against torch fp32's (min and mean).
Accuracy: 10-fold LFW protocol (each fold's threshold chosen on the other 9), as `eval pairs`.
Prints a markdown table and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lfw_pairs import make_pairs  # noqa: E402

from facebatch.imageload import decode_photo, read_photo_bytes  # noqa: E402
from facebatch.models.facenet import FaceEmbedder, OnnxFaceEmbedder, face_crop  # noqa: E402
from facebatch.models.onnx_models import prepare_onnx_models  # noqa: E402
from facebatch.models.weights import resolve_weights  # noqa: E402
from facebatch.people.evaluation import nearest_centre, verification_report  # noqa: E402
from facebatch.store import Library  # noqa: E402

LFW = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "lfw-dev"
BATCH = 32


def central_crops(library: Library, paths: list[str]) -> dict[str, np.ndarray]:
    """path -> the 160x160 crop of its central face, from the library's boxes (as the scan cropped it)."""
    faces = library.read_faces(["path", "box"]).to_pylist()
    boxes: dict[str, list[list[float]]] = {}
    for face in faces:
        boxes.setdefault(face["path"], []).append(face["box"])
    crops = {}
    for path in paths:
        if path not in boxes:
            continue
        data = read_photo_bytes(path)
        photo = decode_photo(data)
        box = boxes[path][nearest_centre(boxes[path], photo.width, photo.height)]
        crops[path] = face_crop(photo, box)  # a full-size decode
    return crops


def embedders(threads: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(threads)
    weights = resolve_weights()
    return {
        "torch fp32 (channels-last)": FaceEmbedder(weights, batch_size=BATCH),
        "ONNX Runtime fp32": OnnxFaceEmbedder(weights, prepare_onnx_models(weights, "fp32").facenet, "fp32", threads, BATCH),
        "ONNX Runtime int8 (static QDQ, per-channel, 7-bit weights)": OnnxFaceEmbedder(
            weights, prepare_onnx_models(weights, "int8").facenet, "int8", threads, BATCH),
    }


def speeds(models: dict[str, object], crops: np.ndarray, rounds: int) -> dict[str, float]:
    batch = crops[:BATCH]
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.embed(batch)  # type: ignore[attr-defined]  # warm-up
    for _ in range(rounds):
        for name, model in models.items():
            started = time.perf_counter()
            model.embed(batch)  # type: ignore[attr-defined]
            model.embed(batch)  # type: ignore[attr-defined]
            times[name].append(2 * BATCH / (time.perf_counter() - started))
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default="/work/libs/lfw-dev", help="a facebatch scan of lfw-dev/images")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    pairs = make_pairs(LFW / "manifest.csv", 10, 300, seed=0)
    root = LFW / "images"
    paths = sorted({str(root / p) for a, b, _, _ in pairs for p in (a, b)})
    crops = central_crops(Library(Path(args.library)), paths)
    stack = np.stack([crops[p] for p in paths if p in crops])

    speed_models = embedders(threads=1)
    faces_per_s = speeds(speed_models, stack, args.rounds)
    accuracy_models = embedders(threads=os.cpu_count() or 1)
    reference = None
    rows = []
    for name, model in accuracy_models.items():
        embedded = model.embed(stack)  # type: ignore[attr-defined]
        reference = embedded if reference is None else reference
        cosine = np.sum(embedded * reference, axis=1)
        index = {p: i for i, p in enumerate(p for p in paths if p in crops)}
        distances = [float(np.linalg.norm(embedded[index[str(root / a)]] - embedded[index[str(root / b)]]))
                     if str(root / a) in index and str(root / b) in index else np.nan for a, b, _, _ in pairs]
        report = verification_report(distances, [bool(s) for _, _, s, _ in pairs], [f for *_, f in pairs])
        rows.append((name, faces_per_s[name], cosine.min(), cosine.mean(), report.accuracy, report.accuracy_std,
                     report.best_threshold))

    base = rows[0][1]
    print(f"{len(pairs)} lfw-dev pairs, {len(stack)} faces ({len(paths) - len(stack)} photos without a face)\n")
    print("| model | runtime | faces/s, batch 32, 1 thread | x torch fp32 | cosine to torch fp32, min / mean | "
          "pair accuracy (10-fold) | best threshold |")
    print("|---|---|---|---|---|---|---|")
    for name, fps, cos_min, cos_mean, accuracy, std, threshold in rows:
        print(f"| InceptionResnetV1 | {name} | {fps:.1f} | {fps / base:.2f} | {cos_min:.4f} / {cos_mean:.4f} | "
              f"{accuracy * 100:.2f} ± {std * 100:.2f}% | {threshold:.3f} |")
    print(f"\nmachine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s; "
          f"reproduce: .venv/bin/python benchmarks/model_runtimes.py --library {args.library} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
