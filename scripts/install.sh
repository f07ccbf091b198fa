#!/usr/bin/env bash
# Install or update BaluPi as a systemd service on Raspberry Pi OS (Bookworm) or Debian 12.
#
#   sudo scripts/install.sh            # from a checkout of BaluPi
#
# Idempotent: running it again upgrades BaluPi from the checkout and restarts the service, and
# keeps the user, the data, the cache and the settings in /etc/balupi/ as they are.
#
# What it does:
#   - installs python3-venv if missing (apt)
#   - creates the system user "balupi"
#   - creates /var/lib/balupi (database, keys) and /srv/balupi/cache (the file cache: put it on the SSD)
#   - creates /etc/balupi/balupi.env from .env.example once (mode 0600; edit it, then restart)
#   - creates or updates the virtualenv /opt/balupi/venv and installs BaluPi into it
#   - installs etc/balupi.service as /etc/systemd/system/balupi.service, enables and (re)starts it
#   - installs the maintenance scripts into /opt/balupi/scripts and the nightly timer
#     (etc/balupi-maintenance.service/.timer: vacuum, cache verify --repair, backup-db), enabled
#
# Environment: BALUPI_NO_START=1 installs and enables without starting.
set -euo pipefail

SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/balupi
VENV="$PREFIX/venv"
SERVICE_USER=balupi
DATA_DIR=/var/lib/balupi
CACHE_DIR=/srv/balupi/cache
CONFIG_DIR=/etc/balupi
UNIT=/etc/systemd/system/balupi.service
UNIT_DIR=/etc/systemd/system

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0"
[ -f "$SOURCE_DIR/setup.cfg" ] && [ -f "$SOURCE_DIR/etc/balupi.service" ] || die "run from a BaluPi checkout ($SOURCE_DIR is not one)"
command -v systemctl >/dev/null || die "systemd is required"

if ! python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is required"
    say "installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi

if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "creating system user $SERVICE_USER"
    useradd --system --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_DIR" "$(dirname "$CACHE_DIR")" "$CACHE_DIR"
install -d -m 0755 "$CONFIG_DIR"
if [ ! -e "$CONFIG_DIR/balupi.env" ]; then
    say "creating $CONFIG_DIR/balupi.env (every setting, commented out)"
    install -m 0600 -o root -g root "$SOURCE_DIR/.env.example" "$CONFIG_DIR/balupi.env"
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    install -d -m 0755 "$PREFIX"
    python3 -m venv "$VENV"
fi
say "installing BaluPi into $VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade "$SOURCE_DIR"
install -m 0644 "$SOURCE_DIR/README.md" "$PREFIX/README.md"

install -d -m 0755 "$PREFIX/scripts"
install -m 0755 "$SOURCE_DIR"/scripts/balupi-*.sh "$PREFIX/scripts/"

say "installing $UNIT and the nightly maintenance timer"
install -m 0644 "$SOURCE_DIR/etc/balupi.service" "$UNIT"
install -m 0644 "$SOURCE_DIR/etc/balupi-maintenance.service" "$SOURCE_DIR/etc/balupi-maintenance.timer" "$UNIT_DIR/"
systemctl daemon-reload
systemctl enable balupi.service balupi-maintenance.timer
if [ "${BALUPI_NO_START:-0}" = "1" ]; then
    say "installed and enabled; not started (BALUPI_NO_START=1)"
else
    systemctl restart balupi.service
    systemctl start balupi-maintenance.timer
    say "started: systemctl status balupi; journalctl -u balupi -f"
fi
say "settings: $CONFIG_DIR/balupi.env (then: systemctl restart balupi)"
