#!/usr/bin/env bash
# Installs what the test suite needs: the Debian packages of the real clients and tools the tests
# drive, and a virtualenv in .venv with BaluPi and its test extras. Works as root without sudo and
# as a user with sudo. The README's test command runs this, then pytest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests need, in one place: add yours here.
#   litmus: WebDAV compliance; davfs2, rclone, cadaver: real WebDAV clients;
#   chromium, chromium-driver: the dashboard's browser test.
DEBIAN_PACKAGES="litmus davfs2 rclone cadaver chromium chromium-driver"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=""
for package in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    # shellcheck disable=SC2086  # the list is meant to split into words
    as_root apt-get install -y -q --no-install-recommends $missing
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
