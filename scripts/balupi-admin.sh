#!/usr/bin/env bash
# Run a balupi command as the service runs it: as the user balupi, with the service's settings
# (/etc/balupi/balupi.env, readable by root only, and the directories of etc/balupi.service).
# Safe while the service runs. Run as root:
#
#   sudo /opt/balupi/scripts/balupi-admin.sh cache verify
#   sudo /opt/balupi/scripts/balupi-admin.sh sync --wake
#
# (A plain `sudo -u balupi balupi ...` would miss the settings and open a database of its own.)
# Environment: BALUPI (the command, default /opt/balupi/venv/bin/balupi), ENV_FILE (default
# /etc/balupi/balupi.env), SERVICE_USER (default balupi).
set -euo pipefail

BALUPI="${BALUPI:-/opt/balupi/venv/bin/balupi}"
ENV_FILE="${ENV_FILE:-/etc/balupi/balupi.env}"
SERVICE_USER="${SERVICE_USER:-balupi}"
[ "$(id -u)" -eq 0 ] || { echo "balupi-admin: run as root (sudo $0 ...)" >&2; exit 1; }
if [ -r "$ENV_FILE" ]; then set -a; . "$ENV_FILE"; set +a; fi
export BALUPI_DATA_DIR="${BALUPI_DATA_DIR:-/var/lib/balupi}" BALUPI_CACHE_DIR="${BALUPI_CACHE_DIR:-/srv/balupi/cache}"
cd "$BALUPI_DATA_DIR"
exec setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups -- "$BALUPI" "$@"
