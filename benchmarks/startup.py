"""Start-up: `facebatch verify a.jpg b.jpg` and a one-photo `facebatch scan`, whole commands, per runtime.

Each command is a fresh process (a fresh library for each scan) with the models already cached
(the first run after install makes the ONNX files: that one is not timed here). The variants take
turns for --rounds rounds; the table gives the median and every run. `--before DIR` adds the same commands run from another source tree of facebatch
(e.g. `git archive cb47748 | tar -x -C /tmp/before`: the code before ONNX Runtime) with this venv.

    .venv/bin/python benchmarks/startup.py [--rounds 3] [--before /tmp/before]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
PHOTO_A = PROJECT / "sample_data" / "people" / "barack_obama" / "1.jpg"
PHOTO_B = PROJECT / "sample_data" / "people" / "barack_obama" / "2.jpg"


# The CLI of whichever tree PYTHONPATH names (the installed script would always run this one).
FACEBATCH = [sys.executable, "-c", "import sys; sys.argv[0] = 'facebatch'; from facebatch.cli import main; main()"]


def timed(command: list[str], tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 1):  # verify: 1 is "different people"
        raise SystemExit(f"{command} failed: {result.stderr.strip()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another facebatch source tree to time the same commands from")
    args = parser.parse_args()
    variants: list[tuple[str, Path, list[str]]] = []
    if args.before:
        variants.append(("before (torch, facenet-pytorch's detect_face)", args.before.resolve(), []))
    variants += [("--runtime torch", PROJECT, ["--runtime", "torch"]),
                 ("default: ONNX Runtime, int8", PROJECT, [])]
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one"
        one.mkdir()
        shutil.copy(PHOTO_A, one / PHOTO_A.name)
        # Warm: weights verified, ONNX files made, page cache filled.
        for _, tree, options in variants:
            timed([*FACEBATCH, "verify", str(PHOTO_A), str(PHOTO_B), *options], tree)
        times: dict[tuple[str, str], list[float]] = {}
        torch_import = []
        for round_ in range(args.rounds):
            torch_import.append(timed([sys.executable, "-c", "import torch"], PROJECT))
            for index, (name, tree, options) in enumerate(variants):
                verify = [*FACEBATCH, "verify", str(PHOTO_A), str(PHOTO_B), *options]
                times.setdefault((name, "verify"), []).append(timed(verify, tree))
                library = Path(tmp) / f"lib-{round_}-{index}"  # a fresh library per run
                scan = [*FACEBATCH, "--library", str(library), "scan", str(one), "-q", *options]
                times.setdefault((name, "scan"), []).append(timed(scan, tree))
    print("| command | variant | seconds (median) | runs |")
    print("|---|---|---|---|")
    for (name, command), runs in times.items():
        label = "verify a.jpg b.jpg" if command == "verify" else "scan of one photo (fresh library)"
        print(f"| {label} | {name} | {np.median(runs):.2f} | {', '.join(f'{r:.2f}' for r in runs)} |")
    print(f"\n`python -c 'import torch'` alone: {np.median(torch_import):.2f} s")
    before = f" --before {args.before}" if args.before else ""
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; reproduce: .venv/bin/python "
          f"benchmarks/startup.py --rounds {args.rounds}{before}")


if __name__ == "__main__":
    main()
