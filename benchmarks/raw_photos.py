"""Photos per second on RAW files, against the same photos as JPEGs, in one run.

The photos are scan_throughput's 12 MP pictures (1-6 LFW faces pasted on a background). Each is
written three ways (tests/dng.py: DNGs, nothing downloaded): as a JPEG (the baseline), as a DNG
with a 1620-pixel JPEG preview (Nikon, Sony and Fujifilm embed about that), as a DNG with a
full-size preview (Canon), and as a DNG with no preview (LibRaw demosaics at half size). Each
folder is scanned by a whole `facebatch scan` command into a fresh library (start-up included).
The DNGs hold linear RGB (16-bit, 72 MB at 12 MP), not a camera's mosaic: LibRaw's half-size
path on them reads three times the bytes of a CR2 and skips the demosaic, so the no-preview row
is a rough figure for real RAWs.

    .venv/bin/python benchmarks/raw_photos.py --photos 8
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from dng import write_dng  # noqa: E402
from scan_throughput import make_12mp  # noqa: E402

WAYS = {"JPEG (baseline)": None, "DNG, 1620 px preview": 1620, "DNG, full-size preview": 10_000, "DNG, no preview": 0}


def cpu_flags() -> str:
    flags = set(re.findall(r"\b(avx2|avx512f|avx512_vnni|avx512_bf16)\b", Path("/proc/cpuinfo").read_text()))
    return f"{platform.processor() or platform.machine()}, flags: {' '.join(sorted(flags)) or 'none of avx2/avx512'}"


def scan_seconds(folder: Path, library: Path) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "facebatch.cli", "--library", str(library), "scan", str(folder)],
                         check=True, capture_output=True, text=True)
    return time.perf_counter() - started, out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_12mp(root / "JPEG (baseline)", args.photos)
        jpegs = sorted((root / "JPEG (baseline)").glob("*.jpg"))
        for way, preview in WAYS.items():
            if preview is None:
                continue
            (root / way).mkdir()
            for jpeg in jpegs:
                write_dng(root / way / (jpeg.stem + ".dng"), Image.open(jpeg), preview_long_side=preview or None)
        print(f"{args.photos} photos of 12 MP; {cpu_flags()}; `facebatch scan`, whole commands, fresh libraries\n")
        print("| photos as | s | photos/s | faces |\n|---|---|---|---|")
        for way in WAYS:
            seconds, summary = scan_seconds(root / way, root / f"lib-{len(way)}-{way[:3]}")
            faces = re.search(r"(\d+) new faces", summary)
            print(f"| {way} | {seconds:.1f} | {args.photos / seconds:.2f} | {faces.group(1) if faces else summary} |",
                  flush=True)
            shutil.rmtree(root / way)


if __name__ == "__main__":
    main()
