"""A scan on a real `dask scheduler` + `dask worker` on this machine, against the local cluster.

The same LFW photos (from ../shared/datasets/lfw-dev), a fresh library each time, the whole
`facebatch scan` command timed, each configuration in turn over --rounds:

  local                 `facebatch scan` alone: its local cluster (one worker per core, a model slot each)
  worker.sh             a scheduler + `dask worker --nworkers CORES --nthreads 1 --resources model=1`
  one worker, N threads a scheduler + `dask worker --nworkers 1 --nthreads CORES`, no slot: the old
                        worker.sh (shards wait on the worker's model lock; torch gets every thread)

    .venv/bin/python benchmarks/dask_workers.py --photos 300 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_throughput import lfw_paths  # noqa: E402

from facebatch.scan.driver import worker_arguments  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
FACEBATCH = [sys.executable, "-m", "facebatch.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_scan(photos: Path, library: Path, worker_args: list[str] | None) -> float:
    shutil.rmtree(library, ignore_errors=True)
    processes, extra = [], []
    env = {**os.environ, "DASK_CONFIG": str(PROJECT / "jobs" / "dask" / "worker-config.yaml")}
    if worker_args is not None:
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        processes.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                                           "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        processes.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, *worker_args,
                                           "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env=env))
        extra = ["--scheduler", address]
        time.sleep(3)  # the workers connect; a worker's own start-up is not the scan's
    try:
        started = time.perf_counter()
        subprocess.run([*FACEBATCH, "--library", str(library), "scan", str(photos), "-q", *extra], check=True)
        return time.perf_counter() - started
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    configurations = {
        "local": None,
        "worker.sh": worker_arguments(cores),
        f"one worker, {cores} threads": ["--nworkers", "1", "--nthreads", str(cores)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for i, path in enumerate(lfw_paths(args.photos, seed=7)):
            shutil.copy(path, photos / f"{i:05d}.jpg")
        times: dict[str, list[float]] = {name: [] for name in configurations}
        for _ in range(args.rounds):
            for name, worker_args in configurations.items():
                times[name].append(timed_scan(photos, Path(tmp) / "lib", worker_args))
    print(f"{args.photos} LFW photos, {cores} cores, best of {args.rounds}\n")
    print("| configuration | seconds | photos/s |\n|---|---|---|")
    for name, runs in times.items():
        print(f"| {name} | {min(runs):.1f} | {args.photos / min(runs):.1f} |")
    print(f"\n.venv/bin/python benchmarks/dask_workers.py --photos {args.photos} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
