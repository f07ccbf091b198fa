"""Issue 15, item 1: `balupi setup` from nothing to a working config, against the simulated NAS
(HTTPS with a self-signed certificate, Wake-on-LAN on a loopback UDP port) and the simulated plug.

The NAS's MAC address comes from the kernel's neighbour table, which has no entry for 127.0.0.1:
the tests write a file in `/proc/net/arp`'s format and name it with `--neighbour-table` (the same
parser reads the real table on a Pi). The interactive test drives the real command through a
pseudo-terminal, answering its prompts as a person would.
"""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from balupi.nas.tls import format_fingerprint
from balupi.sim.nas import DEFAULT_MAC, PowerState, SimNas
from balupi.sim.plug import SimulatedPlug
from tests.authkit import cert_sha256, self_signed_cert
from tests.helpers import free_port, subprocess_env
from tests.test_cli import serve  # noqa: F401

TAPO_USER, TAPO_PASSWORD = "setup@example.com", "plug-pw"
ARP_HEADER = "IP address       HW type     Flags       HW address            Mask     Device\n"


@pytest.fixture
def nas(tmp_path):
    cert = self_signed_cert(tmp_path / "nas-tls", name="nas")
    sim = SimNas(tmp_path / "nas", users={"alice": ("alice-pw", "admin")}, control_port=None, boot_delay_s=1.0,
                 wol_port=free_port(socket.SOCK_DGRAM), tls=cert).start()
    sim.cert = cert
    yield sim
    sim.stop()


@pytest.fixture
def neighbour_table(tmp_path) -> Path:
    path = tmp_path / "arp"
    path.write_text(ARP_HEADER + f"127.0.0.1        0x1         0x2         {DEFAULT_MAC}     *        lo\n")
    return path


def test_setup_non_interactive_end_to_end_gives_a_config_balupi_serves_with(tmp_path, nas, neighbour_table, serve):
    plug = SimulatedPlug(username=TAPO_USER, password=TAPO_PASSWORD, nickname="NAS-Steckdose").start()
    config = tmp_path / "etc" / "balupi.toml"
    port = free_port()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "balupi", "setup", "--non-interactive", "--config", str(config),
             "--nas-url", nas.dav_url, "--nas-user", "alice", "--nas-password", "alice-pw", "--pin-certificate",
             "--neighbour-table", str(neighbour_table), "--wol-test", "--wol-address", "127.0.0.1",
             "--wol-port", str(nas.wol_port), "--cache-dir", str(tmp_path / "cache"), "--data-dir", str(tmp_path / "data"),
             "--host", "127.0.0.1", "--port", str(port), "--plug", f"127.0.0.1:{plug.port}",
             "--tapo-user", TAPO_USER, "--tapo-password", TAPO_PASSWORD],
            cwd=tmp_path, env=subprocess_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        written = tomllib.loads(config.read_text())
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert written["nas_mac_address"] == DEFAULT_MAC  # learned from the neighbour table
        assert written["nas_cert_sha256"] == format_fingerprint(cert_sha256(nas.cert[0]))  # pinned
        boot_s = float(re.search(r"The NAS woke and answered after (\d+\.\d) s", result.stdout).group(1))
        assert boot_s >= 1.0 and written["nas_boot_time_s"] >= boot_s  # measured: the sim boots in 1 s
        assert nas.magic_packet_count >= 1
        assert f"Share       http://127.0.0.1:{port}/dav/" in result.stdout
        assert "NAS-Steckdose" not in written.values()  # (the plug lives in the database, not the file)

        served = serve(BALUPI_CONFIG=str(config))  # (on a port of its own: the environment wins over the file)
        health = served.http.get(served.url + "/api/health", timeout=30).json()
        assert health["nas"]["configured"] is True
        served.http.auth = ("alice", "alice-pw")
        assert served.http.request("PROPFIND", served.url + "/dav/", headers={"Depth": "1"}, timeout=60).status_code == 207
        plugs = served.http.get(served.url + "/api/tapo/devices", timeout=30).json()
        assert [(p["role"], p["host"]) for p in plugs["devices"]] == [("nas", "127.0.0.1")]  # the plug chosen
        assert nas.state is PowerState.AWAKE
    finally:
        plug.stop()


def test_setup_refuses_an_untrusted_certificate_without_consent(tmp_path, nas):
    result = subprocess.run(
        [sys.executable, "-m", "balupi", "setup", "--non-interactive", "--config", str(tmp_path / "balupi.toml"),
         "--nas-url", nas.dav_url, "--nas-user", "alice", "--nas-password", "alice-pw", "--data-dir", str(tmp_path / "d")],
        cwd=tmp_path, env=subprocess_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert format_fingerprint(cert_sha256(nas.cert[0])) in result.stdout  # shown, to compare
    assert "not trusted" in result.stderr
    assert not (tmp_path / "balupi.toml").exists()


class Terminal:
    """A command on a pseudo-terminal: read until a prompt shows, then type the answer."""

    def __init__(self, argv: list[str], env: dict, cwd: Path):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.seen = ""

    def expect(self, pattern: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not re.search(pattern, self.seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the terminal:\n{self.seen}")
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096).decode(errors="replace")
                except OSError:
                    raise AssertionError(f"the command ended before {pattern!r}:\n{self.seen}") from None

    def answer(self, pattern: str, text: str) -> None:
        self.expect(pattern)
        self.seen = ""  # the next expect looks at what comes after this answer
        os.write(self.fd, (text + "\n").encode())

    def wait(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                self.seen += chunk.decode(errors="replace")
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"setup did not finish:\n{self.seen}")


def test_setup_interactive_through_a_pseudo_terminal(tmp_path, nas, neighbour_table):
    config = tmp_path / "balupi.toml"
    fingerprint = format_fingerprint(cert_sha256(nas.cert[0]))
    term = Terminal([sys.executable, "-m", "balupi", "setup", "--config", str(config), "--data-dir", str(tmp_path / "data"),
                     "--neighbour-table", str(neighbour_table)], subprocess_env(tmp_path), tmp_path)
    term.answer(r"Look for the NAS on the network \(DNS-SD\)\? \[y/N\]: ", "n")
    term.answer(r"The NAS's WebDAV address .*: ", nas.dav_url)
    term.expect(re.escape(fingerprint))
    term.answer(r"Pin this certificate .*\[y/N\]: ", "y")
    term.answer(r"NAS user for BaluPi's own requests .*: ", "alice")
    term.answer(r"Password of alice: ", "wrong-pw")
    term.expect(r"The NAS refused alice")
    term.answer(r"NAS user for BaluPi's own requests .*: ", "alice")
    term.answer(r"Password of alice: ", "alice-pw")
    term.expect(r"The NAS accepts alice")
    term.answer(r"The NAS's MAC address, for Wake-on-LAN .*\[02:ba:1b:05:00:01\]: ", "")  # the one it read
    term.answer(r"Try Wake-on-LAN now .*\[y/N\]: ", "n")
    term.answer(r"Folder for the file cache .*: ", str(tmp_path / "ssd" / "cache"))
    term.answer(r"Is the NAS on a Tapo smart plug .*\[y/N\]: ", "n")
    code = term.wait()

    assert code == 0, term.seen
    written = tomllib.loads(config.read_text())
    assert written["nas_webdav_url"] == nas.dav_url and written["nas_username"] == "alice"
    assert written["nas_password"] == "alice-pw" and written["nas_cert_sha256"] == fingerprint
    assert written["nas_mac_address"] == DEFAULT_MAC and written["cache_dir"] == str(tmp_path / "ssd" / "cache")
    assert "alice-pw" not in term.seen  # the password was not echoed


def test_setup_without_a_nas_asks_for_a_local_admin_password(tmp_path):
    config = tmp_path / "balupi.toml"
    result = subprocess.run(
        [sys.executable, "-m", "balupi", "setup", "--non-interactive", "--config", str(config), "--nas-url", "",
         "--local-admin-password", "household", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, env=subprocess_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(config.read_text())["local_admin_password"] == "household"
    assert re.search(r"Share +http://[\d.]+:8000/dav/", result.stdout)


def test_setup_discovers_the_plugs_and_keeps_the_one_chosen_for_the_nas(tmp_path):
    try:
        plug = SimulatedPlug(username=TAPO_USER, password=TAPO_PASSWORD, discovery_port=20002, nickname="Found").start()
    except OSError:
        pytest.skip("UDP port 20002 on 127.0.0.1 is taken")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "balupi", "setup", "--non-interactive", "--config", str(tmp_path / "balupi.toml"),
             "--nas-url", "", "--data-dir", str(tmp_path / "data"), "--discover-plugs", "--tapo-user", TAPO_USER,
             "--tapo-password", TAPO_PASSWORD, "--tapo-discovery-target", "127.0.0.1"],
            cwd=tmp_path, env=subprocess_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120)
    finally:
        plug.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"1\. Found  127\.0\.0\.1", result.stdout)  # the list to choose from
    assert f"at 127.0.0.1:{plug.port} now measures the NAS" in result.stdout
    con = sqlite3.connect(tmp_path / "data" / "balupi.db")
    try:
        assert con.execute("SELECT role, host, port FROM energy_plugs").fetchall() == [("nas", "127.0.0.1", plug.port)]
    finally:
        con.close()
