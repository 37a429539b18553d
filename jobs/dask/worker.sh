#!/usr/bin/env bash
# Start facebatch's workers on one machine: one worker process per group of MODEL_THREADS cores
# (default 1: one process per core, the fastest on CPUs, see BENCHMARKS.md), each with its own
# models and one `model` slot, so it scans one shard at a time with all its threads and shards
# waiting for a slot stay with the scheduler, free for any idle worker. facebatch must be
# installed, and the photos mounted at the same path as on the machine that runs `facebatch scan`.
#   jobs/dask/worker.sh tcp://10.0.0.5:8786
#   MODEL_THREADS=4 jobs/dask/worker.sh tcp://10.0.0.5:8786     # a 32-core node: 8 models of 4 threads
set -euo pipefail
scheduler=${1:?scheduler address, e.g. tcp://10.0.0.5:8786}
# Keeps Dask from setting MALLOC_TRIM_THRESHOLD_ in the worker: with it the models run ~35% slower.
export DASK_CONFIG="$(cd "$(dirname "$0")" && pwd)/worker-config.yaml"
cores=${CORES:-$(nproc)}
threads=${MODEL_THREADS:-1}
exec dask worker "$scheduler" --nworkers $(( cores / threads > 0 ? cores / threads : 1 )) --nthreads "$threads" \
    --resources model=1 --memory-limit "${MEMORY:-auto}"
