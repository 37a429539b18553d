#!/usr/bin/env bash
# Start a Dask scheduler for facebatch (run on one machine; workers and `facebatch scan` connect to it).
set -euo pipefail
exec dask scheduler --host "${HOST:-0.0.0.0}" --port "${PORT:-8786}"
