"""`balupi demo` as a newcomer runs it: a real process, browsing while the NAS sleeps, a wake on a
cache miss, a clean stop on Ctrl-C with the temporary directory gone."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from balupi.demo import DEMO_PASSWORD, DEMO_USER, UNCACHED_EXAMPLE
from balupi.sim.nas_seed import sample_files
from tests.helpers import free_port, subprocess_env

READY_TIMEOUT_S = 60.0  # generous: only a bound for a hang, never an assertion about speed
STOP_TIMEOUT_S = 30.0


class DemoProcess:
    """`python -m balupi demo` with its stdout read line by line on a thread."""

    def __init__(self, tmp_path: Path, *args: str):
        self.lines: list[str] = []
        self.eof = False
        self._cond = threading.Condition()
        self.stderr_path = tmp_path / "demo.stderr"
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "balupi", "demo", *args],
                cwd=tmp_path,
                env=subprocess_env(tmp_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout_s: float = READY_TIMEOUT_S) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.eof:
                    output = "\n".join(self.lines)
                    raise AssertionError(f"no line matching {pattern!r}:\n{output}\n"
                                         f"stderr:\n{self.stderr_path.read_text()}")
                self._cond.wait(min(remaining, 0.5))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)


def nas_state(http: requests.Session, status_url: str) -> str:
    response = http.get(status_url, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["nas_state"]


def test_demo_browses_asleep_wakes_on_a_miss_and_cleans_up(tmp_path: Path) -> None:
    demo = DemoProcess(tmp_path, "--port", str(free_port()), "--duration-s", "20")
    try:
        demo.wait_for_line(r"^Ready: the NAS is asleep")
        dav = demo.wait_for_line(r"WebDAV share\s+(http://\S+)").group(1)
        health = demo.wait_for_line(r"Health\s+(http://\S+)").group(1)
        status = demo.wait_for_line(r"NAS status\s+(http://\S+)").group(1)
        data_dir = Path(demo.wait_for_line(r"Data \(temporary\): (\S+)").group(1))
        for url in (dav, health, status):
            assert url.startswith("http://127.0.0.1:"), url
        assert data_dir.is_dir()
        # The transition is printed by whichever thread noticed it, possibly just after "Ready".
        demo.wait_for_line(r"BaluPi: NAS \w+ -> asleep", timeout_s=10)

        http = requests.Session()
        http.trust_env = False
        http.auth = (DEMO_USER, DEMO_PASSWORD)
        assert http.get(health, timeout=30).status_code == 200
        assert nas_state(http, status) == "asleep"

        listing = http.request("PROPFIND", dav, headers={"Depth": "1"}, timeout=30)
        assert listing.status_code == 207
        for folder in ("Documents", "Photos", "Music"):
            assert f"/dav/{folder}/" in listing.text
        assert nas_state(http, status) == "asleep"  # browsing did not wake it
        assert "-> waking" not in demo.output

        miss = http.get(dav + UNCACHED_EXAMPLE, timeout=60)
        assert miss.status_code == 200
        assert miss.content == sample_files()[UNCACHED_EXAMPLE]
        assert nas_state(http, status) == "awake"
        demo.wait_for_line(r"BaluPi: NAS asleep -> waking")
        demo.wait_for_line(r"BaluPi: NAS waking -> awake")
        demo.wait_for_line(r"simulated NAS: suspended -> booting")

        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(STOP_TIMEOUT_S) == 0, demo.stderr_path.read_text()
        demo.wait_for_line(r"^Demo stopped; temporary data removed")
        assert not data_dir.exists()
        assert "Traceback" not in demo.stderr_path.read_text()
        # Nothing a newcomer has to worry about: no warnings (the demo logs at WARNING on stderr) ...
        assert " WARNING " not in demo.stderr_path.read_text(), demo.stderr_path.read_text()
        # ... and the NAS state never flips back within the wake
        wake = demo.output[demo.output.index("BaluPi: NAS asleep -> waking"):]
        assert "-> asleep" not in wake[:wake.index("BaluPi: NAS waking -> awake")], demo.output
        assert "LOOPBACK GUARD" not in demo.stderr_path.read_text()
    finally:
        demo.kill()
