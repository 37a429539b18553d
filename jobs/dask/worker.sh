#!/usr/bin/env bash
# Start one facebatch worker per machine. facebatch must be installed there, and the photos mounted
# at the same path as on the machine that runs `facebatch scan`. --nthreads is the torch thread
# count the worker gives the models; tasks on a worker run one at a time.
#   jobs/dask/worker.sh tcp://10.0.0.5:8786
set -euo pipefail
scheduler=${1:?scheduler address, e.g. tcp://10.0.0.5:8786}
# Keeps Dask from setting MALLOC_TRIM_THRESHOLD_ in the worker: with it the models run ~35% slower.
export DASK_CONFIG="$(cd "$(dirname "$0")" && pwd)/worker-config.yaml"
exec dask worker "$scheduler" --nthreads "${NTHREADS:-$(nproc)}" --nworkers 1 --memory-limit "${MEMORY:-auto}"
