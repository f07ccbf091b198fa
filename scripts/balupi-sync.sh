#!/usr/bin/env bash
# Write back what waits for the NAS, waking it if needed, e.g. once a night when nobody minds the
# noise (the server also wakes it by policy: BALUPI_SYNC_MAX_DELAY_MINUTES, _MAX_PENDING_MB, _WINDOW).
#
#   crontab -u balupi:  0 4 * * *  /opt/balupi/scripts/balupi-sync.sh
#
# Then refreshes the index and prefetches while the NAS is awake anyway. Safe while the server runs.
# Environment as for balupi-nightly.sh: BALUPI (the command), ENV_FILE (settings to load when
# readable; the NAS credentials are needed here), BALUPI_DATA_DIR/BALUPI_CACHE_DIR (defaults as in
# etc/balupi.service).
set -euo pipefail

BALUPI="${BALUPI:-/opt/balupi/venv/bin/balupi}"
ENV_FILE="${ENV_FILE:-/etc/balupi/balupi.env}"
if [ -r "$ENV_FILE" ]; then set -a; . "$ENV_FILE"; set +a; fi
export BALUPI_DATA_DIR="${BALUPI_DATA_DIR:-/var/lib/balupi}" BALUPI_CACHE_DIR="${BALUPI_CACHE_DIR:-/srv/balupi/cache}"
"$BALUPI" sync --wake
"$BALUPI" refresh --budget-s 900
"$BALUPI" prefetch
