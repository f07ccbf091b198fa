#!/usr/bin/env bash
# Nightly maintenance of BaluPi, safe while the server runs (cron or etc/balupi-maintenance.timer):
#   1. balupi vacuum                 compact the database, empty its write-ahead log
#   2. balupi cache verify --repair  check every cached file against the index and the content of up to
#                                    VERIFY_CONTENT_GB of it against its checksums (the next night goes
#                                    on from there); drop or quarantine what is wrong
#   3. balupi backup-db DIR          an online copy of the database, the newest KEEP kept
#
# Best run by etc/balupi-maintenance.timer, which gives it the server's settings and user. From cron,
# use the balupi user's crontab (crontab -u balupi -e), never root's (files it creates in the data
# directory must stay the service's):
#   30 3 * * *  /opt/balupi/scripts/balupi-nightly.sh
#
# Environment (besides the BALUPI_* settings; names beginning with BALUPI_ are settings only):
#   BALUPI       the balupi command (default /opt/balupi/venv/bin/balupi)
#   ENV_FILE     settings to load when readable (default /etc/balupi/balupi.env)
#   BACKUP_DIR   where the copies go (default /var/lib/balupi/backups)
#   BACKUP_KEEP  how many copies to keep (default 7)
#   VERIFY_CONTENT_GB  content checked per night (default 25: about 12 minutes at a Pi's USB 2 speed)
# BALUPI_DATA_DIR and BALUPI_CACHE_DIR default to those of etc/balupi.service.
# Exit status: that of the first step that failed (all steps run); `cache verify` fails when it
# found something it could not repair, or lost changes (see its output).
set -euo pipefail

BALUPI="${BALUPI:-/opt/balupi/venv/bin/balupi}"
ENV_FILE="${ENV_FILE:-/etc/balupi/balupi.env}"
if [ -r "$ENV_FILE" ]; then set -a; . "$ENV_FILE"; set +a; fi
export BALUPI_DATA_DIR="${BALUPI_DATA_DIR:-/var/lib/balupi}" BALUPI_CACHE_DIR="${BALUPI_CACHE_DIR:-/srv/balupi/cache}"
BACKUP_DIR="${BACKUP_DIR:-/var/lib/balupi/backups}"
KEEP="${BACKUP_KEEP:-7}"
VERIFY_GB="${VERIFY_CONTENT_GB:-25}"
status=0

step() {
    "$BALUPI" "$@" || { rc=$?; echo "balupi-nightly: 'balupi $*' failed ($rc)" >&2; [ "$status" -ne 0 ] || status=$rc; }
}

mkdir -p -m 0750 "$BACKUP_DIR"
step vacuum
step cache verify --repair --content-gb "$VERIFY_GB"
step backup-db "$BACKUP_DIR/balupi-$(date +%Y%m%d-%H%M%S).db"
# Keep the newest $KEEP copies (names sort by date).
find "$BACKUP_DIR" -maxdepth 1 -name 'balupi-*.db' -type f | sort -r | tail -n +"$((KEEP + 1))" | while read -r old; do
    rm -f -- "$old"
done
exit "$status"
