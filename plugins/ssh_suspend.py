"""ssh_suspend: suspend a NAS without BaluHost's API by running a command on it over SSH.

Provides `balupi_nas_suspend_action` ahead of the built-in BaluHost one: when BaluPi finds the NAS
idle (`nas_idle_suspend_minutes`), it runs

    ssh -i <key_file> -p <port> -o BatchMode=yes <user>@<host> <command>

and a non-zero exit status (or a timeout) counts as a failed suspend (BaluPi logs it and keeps the
NAS awake). Unconfigured (no `host`), it provides nothing and the default stays in charge.

    [plugins.ssh_suspend]
    host = "nas.local"
    user = "root"
    key_file = "/etc/balupi/nas_ed25519"      # a key with no passphrase, readable by BaluPi only
    command = "systemctl suspend"
    port = 22
    timeout_s = 20
    ssh = ["ssh"]                              # the program (and fixed options) to run
    known_hosts = ""                          # a known_hosts file pinning the NAS's key; "" = ssh's default
"""

from __future__ import annotations

import logging
import subprocess

from balupi.hookspecs import hookimpl
from balupi.plugins import Setting, parse_float, parse_int, parse_list, parse_path

__version__ = "1.0"
log = logging.getLogger("balupi.plugins.ssh_suspend")

SETTINGS = (
    Setting("host", "", "The NAS's SSH host name or address. Empty: this plugin does nothing."),
    Setting("user", "root", "The SSH user."),
    Setting("key_file", None, "The private key to log in with.", parse_path),
    Setting("command", "systemctl suspend", "The command that suspends the NAS."),
    Setting("port", 22, "The SSH port.", parse_int),
    Setting("timeout_s", 20.0, "Give up after this long.", parse_float),
    Setting("ssh", ("ssh",), "The ssh program and fixed options.", parse_list),
    Setting("known_hosts", None, "A known_hosts file with the NAS's key. Empty: ssh's default.", parse_path),
)

config: dict = {}


def configure(values: dict) -> None:
    if values["host"] and values["key_file"] is None:
        raise ValueError("key_file is needed with host (BatchMode: no password prompts)")
    if values["key_file"] is not None and not values["key_file"].is_file():
        raise ValueError(f"key_file {values['key_file']} is not a file")
    config.update(values)


def command_line() -> list[str]:
    line = [*config["ssh"], "-i", str(config["key_file"]), "-p", str(config["port"]), "-o", "BatchMode=yes"]
    if config["known_hosts"] is not None:
        line += ["-o", f"UserKnownHostsFile={config['known_hosts']}", "-o", "StrictHostKeyChecking=yes"]
    return line + [f"{config['user']}@{config['host']}", config["command"]]


def suspend() -> None:
    line = command_line()
    try:
        done = subprocess.run(line, capture_output=True, text=True, timeout=config["timeout_s"], stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"ssh_suspend: no answer within {config['timeout_s']:g} s") from None
    except OSError as exc:
        raise RuntimeError(f"ssh_suspend: cannot run {line[0]}: {exc}") from None
    if done.returncode != 0:
        raise RuntimeError(f"ssh_suspend: exit status {done.returncode}: {done.stderr.strip()[:200]}")
    log.info("ssh_suspend: ran %r on %s", config["command"], config["host"])


@hookimpl(tryfirst=True)
def balupi_nas_suspend_action(app):
    return suspend if config.get("host") else None
