"""`facebatch identify` on one photo and on many: the whole command, start-up included.

A library of sample_data (scanned here) with its people named; then `identify` on 1, 10 and 40
photos (copies of LFW photos from ../shared/datasets/lfw-dev, one face each): the models are built
once per command, so the cost of a photo is the slope, and one photo pays the start-up.

    .venv/bin/python benchmarks/identify_photos.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_throughput import lfw_paths  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
FACEBATCH = [sys.executable, "-m", "facebatch.cli"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "lib"
        subprocess.run([*FACEBATCH, "--library", str(library), "run", str(PROJECT / "sample_data"), "-q",
                        "--no-report"], check=True, capture_output=True)
        from facebatch.people.actions import label_cluster
        from facebatch.people.view import build_view
        from facebatch.store import Library

        lib = Library(library)
        for info in build_view(lib).clusters.values():
            label_cluster(lib, info.cluster_id, f"person {info.cluster_id}")
        photos = lfw_paths(40, seed=11)
        rows = []
        for count in (1, 10, 40):
            folder = Path(tmp) / f"photos-{count}"
            folder.mkdir()
            for i, path in enumerate(photos[:count]):
                shutil.copy(path, folder / f"{i:03d}.jpg")
            started = time.perf_counter()
            subprocess.run([*FACEBATCH, "--library", str(library), "identify", str(folder), "--json"], check=True,
                           capture_output=True)
            rows.append((count, time.perf_counter() - started))
    print("| photos | seconds, whole command | per photo |\n|---|---|---|")
    for count, seconds in rows:
        print(f"| {count} | {seconds:.1f} | {seconds / count:.2f} |")
    slope = (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0])
    print(f"\neach photo after the first: {slope:.2f} s; start-up and the first photo: {rows[0][1]:.1f} s")
    print("\n.venv/bin/python benchmarks/identify_photos.py")


if __name__ == "__main__":
    main()
