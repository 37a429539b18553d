"""MTCNN's glue (pyramid, crops, NMS) in this tree against another commit's, on the same inputs.

Loads facebatch/models/mtcnn.py as it was at --before (`git show`) beside this tree's, runs both on
the same detection copies with the same ONNX Runtime nets (one thread, as a scan worker runs them,
the two taking turns over --rounds), and prints per photo the glue's milliseconds (detection less
the nets), the nets', and whether every box, score and landmark came out the same, bit for bit:
6 photos of 12 MP made as scan_throughput.py makes them (at the 1280-px detection size) and
--photos LFW-size photos of lfw-dev.

    .venv/bin/python benchmarks/detection_glue.py --before cd8f64b
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_throughput import PROJECT, TimedNets, cpu_flags, lfw_paths, make_12mp  # noqa: E402

from facebatch.config import DEFAULT_DETECT_MAX_SIDE, DetectionSettings, ModelSettings  # noqa: E402
from facebatch.imageload import decode_photo  # noqa: E402
from facebatch.models import mtcnn  # noqa: E402
from facebatch.models.detection import MTCNN_MIN_SIZE, detection_copy  # noqa: E402
from facebatch.models.faces import prepare_builder  # noqa: E402
from facebatch.models.onnx_models import OnnxMtcnnNets  # noqa: E402


def module_at(commit: str, folder: Path) -> ModuleType:
    """facebatch/models/mtcnn.py as it was at `commit`, imported under another name."""
    path = folder / f"mtcnn_{commit}.py"
    path.write_bytes(subprocess.check_output(["git", "show", f"{commit}:facebatch/models/mtcnn.py"], cwd=PROJECT))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed_detection(module: ModuleType, photos: list[np.ndarray], nets: OnnxMtcnnNets) -> tuple[float, float, list]:
    """Seconds per photo in the glue and in the nets, and what was found."""
    timed = TimedNets(nets)
    started = time.perf_counter()
    found = [module.detect_faces(pixels, MTCNN_MIN_SIZE, timed) for pixels in photos]
    total = time.perf_counter() - started
    nets_seconds = sum(timed.seconds.values())
    return (total - nets_seconds) / len(photos), nets_seconds / len(photos), found


def identical(a: list, b: list) -> bool:
    return all(np.array_equal(x, y) for pair_a, pair_b in zip(a, b) for x, y in zip(pair_a, pair_b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the commit whose glue to compare against")
    parser.add_argument("--photos", type=int, default=100, help="LFW-size photos")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    builder = prepare_builder(DetectionSettings(), None, ModelSettings(), threads=1)
    assert builder.onnx is not None
    nets = OnnxMtcnnNets(builder.onnx, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        before = module_at(args.before, Path(tmp))
        make_12mp(Path(tmp) / "12mp", 6)
        sets = {
            "12 MP, at 1280x960": [detection_copy(decode_photo(p.read_bytes(), min_long_side=DEFAULT_DETECT_MAX_SIDE),
                                                  DEFAULT_DETECT_MAX_SIDE)[0]
                                   for p in sorted((Path(tmp) / "12mp").glob("*.jpg"))],
            "LFW-size (250x250)": [np.asarray(Image.open(p).convert("RGB")) for p in lfw_paths(args.photos, seed=3)],
        }
    print(f"| photos | n | glue at {args.before}, ms | glue now, ms | nets, ms | faces | identical boxes, scores, landmarks |")
    print("|---|---|---|---|---|---|---|")
    for name, photos in sets.items():
        glue: dict[str, list[float]] = {"before": [], "now": []}
        nets_ms, found = [], {}
        for _ in range(args.rounds):
            for label, module in (("before", before), ("now", mtcnn)):
                glue_s, nets_s, found[label] = timed_detection(module, photos, nets)
                glue[label].append(1000 * glue_s)
                nets_ms.append(1000 * nets_s)
        faces = sum(len(boxes) for boxes, _ in found["now"])
        print(f"| {name} | {len(photos)} | {np.median(glue['before']):.1f} | {np.median(glue['now']):.1f} | "
              f"{np.median(nets_ms):.1f} | {faces} | {identical(found['before'], found['now'])} |")
    print(f"\nmedian of {args.rounds} rounds, taking turns, one thread; CPU flags {cpu_flags()}; reproduce: "
          f".venv/bin/python benchmarks/detection_glue.py --before {args.before} --photos {args.photos} "
          f"--rounds {args.rounds}")


if __name__ == "__main__":
    main()
