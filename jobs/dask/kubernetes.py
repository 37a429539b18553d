"""Scan on Kubernetes: the Dask operator (dask-kubernetes) runs a DaskCluster of facebatch workers.

Each worker pod gets CORES cores and runs one worker process per MODEL_THREADS of them, each with
one `model` slot (as jobs/dask/worker.sh and the local cluster do), glibc's adaptive malloc kept.
The image must have facebatch installed, and the photos mounted at the same path as where
`facebatch scan` runs. `--dry-run` prints the DaskCluster manifest (for `kubectl apply -f -`) and
starts nothing.

    pip install dask-kubernetes      # and the Dask operator in the cluster
    python jobs/dask/kubernetes.py /nas/photos --library /nas/faces --image registry/facebatch:1 --workers 4
    python jobs/dask/kubernetes.py /nas/photos --library /nas/faces --image registry/facebatch:1 --dry-run
"""

from __future__ import annotations

import argparse
import subprocess

from facebatch.scan.driver import worker_arguments


def cluster_spec(args: argparse.Namespace) -> dict:
    from dask_kubernetes.operator import make_cluster_spec

    spec = make_cluster_spec(
        name=args.name,
        image=args.image,
        n_workers=args.workers,
        resources={"requests": {"cpu": str(args.cores), "memory": args.memory},
                   "limits": {"cpu": str(args.cores), "memory": args.memory}},
        # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 otherwise: the models run ~35% slower.
        env={"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_": "None"},
    )
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    worker["args"] = ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--dashboard", "--dashboard-address", "8788",
                      *worker_arguments(args.cores, args.model_threads)]
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--library", required=True)
    parser.add_argument("--image", required=True, help="a container image with facebatch installed")
    parser.add_argument("--name", default="facebatch")
    parser.add_argument("--workers", type=int, default=2, help="worker pods")
    parser.add_argument("--cores", type=int, default=8, help="cores per pod")
    parser.add_argument("--model-threads", type=int, default=1, help="cores per model (worker process)")
    parser.add_argument("--memory", default="16Gi")
    parser.add_argument("--dry-run", action="store_true", help="print the manifest, start nothing")
    args = parser.parse_args()
    spec = cluster_spec(args)
    if args.dry_run:
        import yaml

        print(yaml.safe_dump(spec, sort_keys=False))
        return
    from dask_kubernetes.operator import KubeCluster

    with KubeCluster(custom_cluster_spec=spec) as cluster:
        subprocess.run(["facebatch", "--library", args.library, "scan", *args.folders,
                        "--scheduler", cluster.scheduler_address], check=True)


if __name__ == "__main__":
    main()
