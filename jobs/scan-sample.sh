#!/usr/bin/env bash
# The main job on the bundled sample photos, into ./facebatch-library.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/facebatch scan sample_data "$@"
