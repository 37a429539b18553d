"""Choose the detection defaults: recall, false faces and time against the detection size and min score.

Runs facebatch's own decode + MTCNN path on ../shared/datasets:
- faces-dev: library photos up to 2048 px; a photo must yield at least its labelled people;
- hard/tiny_faces: group photos with dlib's hand-drawn boxes (recall = boxes matched at IoU >= 0.3);
- hard/very_large: 5568x3712 originals with 1-2 people;
- hard/no_faces: every detection there is a false face.

    .venv/bin/python benchmarks/detect_size.py [--sizes 640,960,1280,1600,2048] [--scores 0.9,0.95,0.99]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from facebatch.config import DetectionSettings
from facebatch.models.detection import FaceDetector
from facebatch.imageload import decode_photo, read_photo_bytes
from facebatch.scan.driver import iou

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def tiny_face_truth() -> dict[Path, list[np.ndarray]]:
    truth: dict[Path, list[np.ndarray]] = {}
    folder = DATASETS / "hard" / "tiny_faces"
    for xml in ("dlib_training.xml", "dlib_testing.xml"):
        for image in ET.parse(folder / xml).getroot().iter("image"):
            path = folder / f"dlib_{Path(image.get('file')).name}"
            boxes = [
                np.array([int(b.get("left")), int(b.get("top")),
                          int(b.get("left")) + int(b.get("width")), int(b.get("top")) + int(b.get("height"))], float)
                for b in image.iter("box") if b.get("ignore") != "1"
            ]
            if path.exists():
                truth[path] = boxes
    return truth


def people_count(manifest: Path, root: Path, prefix: str = "") -> dict[Path, int]:
    with open(manifest) as f:
        return {
            root / row["path"]: len(row["identity"].split(";"))
            for row in csv.DictReader(f)
            if row["identity"] and row["path"].startswith(prefix)
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="640,960,1280,1600,2048")
    parser.add_argument("--scores", default="0.9,0.95,0.99")
    args = parser.parse_args()
    if not DATASETS.is_dir():
        sys.exit(f"{DATASETS} is absent: this benchmark needs the internal test photos")
    torch.set_num_threads(2)
    sizes = [int(s) for s in args.sizes.split(",")]
    scores = [float(s) for s in args.scores.split(",")]
    tiny = tiny_face_truth()
    people = people_count(DATASETS / "faces-dev" / "manifest.csv", DATASETS / "faces-dev")
    people |= people_count(DATASETS / "hard" / "manifest.csv", DATASETS / "hard", "very_large/")
    no_faces = sorted((DATASETS / "hard" / "no_faces").glob("*.*"))
    blobs = {p: read_photo_bytes(str(p)) for p in [*tiny, *people, *no_faces]}

    print(f"| detect size | min score | tiny-face recall | library photos with all people | very_large found | "
          f"false faces on {len(no_faces)} no-face photos | detect s/photo (large photos) |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        detector = FaceDetector(DetectionSettings(max_side=size, min_face=1, min_score=0.0))
        found: dict[Path, list] = {}
        seconds = []
        for path, data in blobs.items():
            photo = decode_photo(data, min_long_side=size)
            started = time.perf_counter()
            found[path] = detector.detect(photo)
            if max(photo.width, photo.height) > 1000:
                seconds.append(time.perf_counter() - started)
        for score in scores:
            kept = {p: [f for f in faces if f.score >= score] for p, faces in found.items()}
            matched = sum(
                any(iou(np.array(f.box), box) >= 0.3 for f in kept[p]) for p, boxes in tiny.items() for box in boxes
            )
            total = sum(len(b) for b in tiny.values())
            library = [p for p in people if "very_large" not in str(p)]
            complete = sum(len(kept[p]) >= people[p] for p in library)
            large = [p for p in people if "very_large" in str(p)]
            large_found = sum(min(len(kept[p]), people[p]) for p in large)
            false = sum(len(kept[p]) for p in no_faces)
            print(f"| {size} | {score} | {matched}/{total} ({matched / total:.0%}) | {complete}/{len(library)} | "
                  f"{large_found}/{sum(people[p] for p in large)} | {false} | {np.mean(seconds):.2f} |")
    print(f"\nreproduce: .venv/bin/python benchmarks/detect_size.py --sizes {args.sizes} --scores {args.scores}")


if __name__ == "__main__":
    main()
