"""Scan on a SLURM cluster: dask-jobqueue starts facebatch workers as batch jobs.

Each job takes one node's CORES cores and runs one worker process per MODEL_THREADS of them, each
with one `model` slot (as jobs/dask/worker.sh and the local cluster do), with glibc's adaptive
malloc kept (jobs/dask/worker-config.yaml). `--dry-run` prints the job script and starts nothing.

    pip install dask-jobqueue
    python jobs/dask/slurm.py /nas/photos --library /nas/faces --jobs 4 --cores 32 --queue normal
    python jobs/dask/slurm.py /nas/photos --library /nas/faces --dry-run
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from facebatch.scan.driver import MODEL_RESOURCE, worker_arguments

CONFIG = Path(__file__).resolve().parent / "worker-config.yaml"


def make_cluster(args: argparse.Namespace):  # -> dask_jobqueue.SLURMCluster
    from dask_jobqueue import SLURMCluster

    workers = worker_arguments(args.cores, args.model_threads)
    processes = int(workers[workers.index("--nworkers") + 1])
    return SLURMCluster(
        cores=args.cores,
        processes=processes,  # dask-jobqueue's word for worker processes per job: --nworkers
        memory=args.memory,
        queue=args.queue,
        walltime=args.walltime,
        worker_extra_args=["--resources", f"{MODEL_RESOURCE}=1"],
        job_script_prologue=[f"export DASK_CONFIG={CONFIG}"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--library", required=True)
    parser.add_argument("--jobs", type=int, default=2, help="SLURM jobs (nodes) to start")
    parser.add_argument("--cores", type=int, default=32, help="cores per job")
    parser.add_argument("--model-threads", type=int, default=1, help="cores per model (worker process)")
    parser.add_argument("--memory", default="64GB", help="memory per job")
    parser.add_argument("--queue", default=None)
    parser.add_argument("--walltime", default="12:00:00")
    parser.add_argument("--dry-run", action="store_true", help="print the job script, start nothing")
    args = parser.parse_args()
    cluster = make_cluster(args)
    if args.dry_run:
        print(cluster.job_script())
        cluster.close()
        return
    with cluster:
        cluster.scale(jobs=args.jobs)
        subprocess.run(["facebatch", "--library", args.library, "scan", *args.folders,
                        "--scheduler", cluster.scheduler_address], check=True)


if __name__ == "__main__":
    main()
