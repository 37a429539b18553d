#!/usr/bin/env bash
# Cron recipe: bring a library up to date every night: scan the new and changed photos, cluster
# (names given before flow to the new photos), export the tags and refresh the review site. A run
# killed by a reboot resumes the next night; --strict makes cron mail you about photos that failed.
#   0 2 * * *  /opt/facebatch/jobs/nightly.sh /srv/photos /srv/facebatch-library
set -euo pipefail
photos=${1:?photo folder}
library=${2:?library folder}
exec "$(dirname "$0")/../.venv/bin/facebatch" --library "$library" run "$photos" --quiet --strict
