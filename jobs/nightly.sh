#!/usr/bin/env bash
# Cron recipe: bring a library up to date every night. Only new and changed photos see the models;
# a run killed by a reboot resumes the next night. --strict makes cron mail you about failures.
#   0 2 * * *  /opt/facebatch/jobs/nightly.sh /srv/photos /srv/facebatch-library
set -euo pipefail
photos=${1:?photo folder}
library=${2:?library folder}
exec "$(dirname "$0")/../.venv/bin/facebatch" --library "$library" scan "$photos" --quiet --strict
