"""What `--find-rotated` finds and costs: photos held sideways with no orientation tag.

Every photo of ../shared/datasets/faces-dev (library photos and group shots) is turned a quarter
clockwise and a quarter counter-clockwise, pixels rotated and no EXIF orientation (as an old scan
or a camera that wrote none leaves them), and detected as the scan detects (MTCNN in ONNX Runtime,
the default settings, one thread) with and without `find_rotated`; the upright photos give the
faces to find. The no-face photos of ../shared/datasets/hard say what the two extra passes cost
where there is nobody, and whether they invent faces.

    .venv/bin/python benchmarks/rotated_faces.py
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facebatch.config import DetectionSettings  # noqa: E402
from facebatch.imageload import decode_photo  # noqa: E402
from facebatch.models.detection import FaceDetector  # noqa: E402
from facebatch.models.onnx_models import OnnxMtcnnNets, prepare_onnx_models  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
TURNS = {"clockwise": Image.Transpose.ROTATE_270, "counter-clockwise": Image.Transpose.ROTATE_90}


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)  # no EXIF: the orientation is lost, as on an old scan
    return buffer.getvalue()


def detect(detector: FaceDetector, data: bytes) -> tuple[int, float]:
    photo = decode_photo(data, min_long_side=detector.settings.max_side)
    started = time.perf_counter()
    faces = detector.detect(photo)
    return len(faces), time.perf_counter() - started


def main() -> None:
    nets = OnnxMtcnnNets(prepare_onnx_models(None, "int8"), 1)
    plain, rotated = FaceDetector(DetectionSettings(), nets), FaceDetector(DetectionSettings(find_rotated=True), nets)
    photos = sorted(p for p in (DATASETS / "faces-dev").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    upright = {}
    for path in photos:
        with Image.open(path) as image:
            upright[path] = ImageOps.exif_transpose(image).convert("RGB")
    print("| photos | turn | photos | faces upright | found without --find-rotated | found with it | s/photo without | s/photo with |")
    print("|---|---|---|---|---|---|---|---|")
    for turn, transpose in TURNS.items():
        totals = [0, 0, 0, 0.0, 0.0]
        for path, image in upright.items():
            expected = detect(plain, jpeg(image))[0]
            data = jpeg(image.transpose(transpose))
            (without, t_without), (with_, t_with) = detect(plain, data), detect(rotated, data)
            totals = [totals[0] + expected, totals[1] + without, totals[2] + with_, totals[3] + t_without,
                      totals[4] + t_with]
        n = len(upright)
        print(f"| faces-dev | {turn} | {n} | {totals[0]} | {totals[1]} | {totals[2]} | {totals[3] / n:.3f} | "
              f"{totals[4] / n:.3f} |", flush=True)
    empty = sorted(p for p in (DATASETS / "hard" / "no_faces").glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    totals = [0, 0, 0.0, 0.0]
    for path in empty:
        data = path.read_bytes()
        (without, t_without), (with_, t_with) = detect(plain, data), detect(rotated, data)
        totals = [totals[0] + without, totals[1] + with_, totals[2] + t_without, totals[3] + t_with]
    n = len(empty)
    print(f"| hard/no_faces | as they are | {n} | 0 | {totals[0]} | {totals[1]} | {totals[2] / n:.3f} | "
          f"{totals[3] / n:.3f} |")
    print("\nreproduce: .venv/bin/python benchmarks/rotated_faces.py (one thread)")


if __name__ == "__main__":
    main()
