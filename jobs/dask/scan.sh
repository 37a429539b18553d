#!/usr/bin/env bash
# Scan a NAS on an existing Dask cluster (see scheduler.sh and worker.sh).
#   jobs/dask/scan.sh tcp://10.0.0.5:8786 /nas/photos /nas/facebatch-library
set -euo pipefail
scheduler=${1:?scheduler address}
photos=${2:?photo folder (same path on every worker)}
library=${3:?library folder}
exec facebatch --library "$library" scan "$photos" --scheduler "$scheduler"
