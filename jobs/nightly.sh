#!/usr/bin/env bash
# Cron recipe: bring a library up to date every night. `facebatch run` scans the new and changed
# photos, clusters (names given before flow to the new photos), exports the tags and refreshes
# the review site; `export-xmp` then writes the names into the photos' XMP sidecars for digiKam,
# Lightroom, Immich and PhotoPrism. A run killed by a reboot resumes the next night; --strict
# makes cron mail you about photos that failed.
#   0 2 * * *  /opt/facebatch/jobs/nightly.sh /srv/photos /srv/facebatch-library
set -euo pipefail
photos=${1:?photo folder}
library=${2:?library folder}
facebatch="$(dirname "$0")/../.venv/bin/facebatch"
"$facebatch" --library "$library" run "$photos" --quiet --strict
"$facebatch" --library "$library" export-xmp > /dev/null
