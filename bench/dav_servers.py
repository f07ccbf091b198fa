"""The servers the WebDAV benchmark compares, each started as a subprocess on 127.0.0.1.

A `ServerKind` knows which binaries it needs, how to start over a data folder (`launch`), and where
in its URL space the data appears (`root_path`). `RunningServer` owns the subprocess: it waits for
the port to answer, measures CPU and RSS of the whole process tree (nginx's master and workers),
and stops it: SIGTERM, then SIGKILL of its process group, which it made its own at start. Given a
`PiClassCgroup` (bench/pi_class.py), the server joins it before it execs.

`balupi` runs with NAS logins on: a simulated NAS (`SimNasProcess`, `python -m balupi.sim.nas`, its
own process, never in the cgroup: it stands for another machine) is its NAS; the first login is
checked with it, then it is suspended, so every later request is a cache hit whose login is
remembered (as on a Pi whose NAS sleeps) and the write-back does not run during the measurements.
`balupi-anon` is the issue-4 setup: no NAS, anonymous.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.servers import ServerFailed, free_port, read_ready_line, stop_process_group, wait_until_answers

BENCH_DIR = Path(__file__).resolve().parent
NGINX_DAV_EXT_MODULE = Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so")
NGINX_WORKERS = "auto"  # as Debian's stock nginx.conf
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_BYTES = 2000
NAS_USER, NAS_PASSWORD = "bench", "bench-pw"  # the simulated NAS's admin, BaluPi's login in the benchmark
NAS_MAC = "02:ba:1b:05:00:14"


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True)
class ServerKind:
    key: str
    label: str
    root_path: str  # URL path of the data folder, ending in "/"
    binaries: tuple[str, ...] = ()  # executables needed on PATH
    apt_packages: tuple[str, ...] = ()
    needs_upload: bool = False  # True: the data must be PUT through WebDAV after start
    python: bool = False  # py-spy can profile it
    nas: bool = False  # needs a simulated NAS (BaluPi with NAS logins on)
    small_only: bool = False  # answers only the 4 KiB GET (the floors of bench/cheroot_floor.py)

    def missing(self) -> list[str]:
        """Debian packages to install before this server can run (empty: ready)."""
        missing = [b for b in self.binaries if shutil.which(b) is None]
        if self.key == "nginx" and not NGINX_DAV_EXT_MODULE.exists():
            missing.append(str(NGINX_DAV_EXT_MODULE))
        return list(self.apt_packages) if missing else []

    def launch(self, port: int, data: Path, work: Path, nas: "SimNasProcess | None" = None) -> Launch:
        if self.nas:
            return LAUNCHERS[self.key](port, data, work, nas)
        return LAUNCHERS[self.key](port, data, work)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BALUPI_", "RCLONE_")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(extra)
    return env


def _launch_stock_wsgidav(port: int, data: Path, work: Path) -> Launch:
    return Launch([sys.executable, str(BENCH_DIR / "stock_wsgidav.py"), "--root", str(data), "--port", str(port)],
                  _clean_env(PYTHONUNBUFFERED="1"), work)


def _floor_launcher(mode: str):
    def launch(port: int, data: Path, work: Path) -> Launch:
        extra = os.environ.get(FLOOR_ARGS_ENV, "").split()  # e.g. "--work file,sqlite" (cheroot_floor.py)
        return Launch([sys.executable, str(BENCH_DIR / "cheroot_floor.py"), "--mode", mode, "--port", str(port),
                       "--file", str(data / "small.bin"), *extra], _clean_env(PYTHONUNBUFFERED="1"), work)
    return launch


def _launch_rclone(port: int, data: Path, work: Path) -> Launch:
    argv = ["rclone", "serve", "webdav", str(data), "--addr", f"127.0.0.1:{port}",
            "--vfs-cache-mode", "full", "--cache-dir", str(work / "rclone-cache")]
    return Launch(argv, _clean_env(RCLONE_CONFIG=str(work / "rclone.conf")), work)


def _launch_nginx(port: int, data: Path, work: Path) -> Launch:
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(f"    {sub}_temp_path {work / 'tmp' / sub};\n"
                         for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = f"""{user}worker_processes {NGINX_WORKERS};
pid {work / 'nginx.pid'};
error_log {work / 'error.log'} warn;
load_module {NGINX_DAV_EXT_MODULE};
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp_paths}    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {data};
        autoindex off;
        client_max_body_size 0;
        create_full_put_path on;
        dav_methods PUT DELETE MKCOL COPY MOVE;
        dav_ext_methods PROPFIND OPTIONS;
    }}
}}
"""
    conf_path = work / "nginx.conf"
    conf_path.write_text(conf)
    argv = ["nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf_path), "-g", "daemon off;"]
    return Launch(argv, _clean_env(), work)


def balupi_nas_env(nas: "SimNasProcess") -> dict[str, str]:
    """BaluPi's settings for a simulated NAS: its URLs, the service account, magic packets to its UDP
    port; prefetch and the walk after a wake off (the benchmarks decide what is fetched)."""
    return {
        "BALUPI_NAS_WEBDAV_URL": nas.dav_url, "BALUPI_NAS_URL": nas.base_url,
        "BALUPI_NAS_USERNAME": NAS_USER, "BALUPI_NAS_PASSWORD": NAS_PASSWORD, "BALUPI_NAS_MAC_ADDRESS": NAS_MAC,
        "BALUPI_WOL_PORT": str(nas.wol_port), "BALUPI_PREFETCH_BUDGET_MB": "0", "BALUPI_REFRESH_WALK_BUDGET_S": "0",
    }


def _launch_balupi(port: int, data: Path, work: Path, nas: "SimNasProcess | None" = None) -> Launch:
    """No NAS configured unless `nas`; magic packets and plug discovery aimed at loopback, so nothing
    leaves it. An empty config file keeps /etc/balupi/balupi.toml and ./etc/balupi.toml out."""
    config = work / "balupi.toml"
    config.write_text("")
    env = _clean_env(
        BALUPI_CONFIG=str(config), BALUPI_HOST="127.0.0.1", BALUPI_PORT=str(port),
        BALUPI_DATA_DIR=str(work / "data"), BALUPI_CACHE_DIR=str(work / "cache"),
        BALUPI_WOL_ADDRESS="127.0.0.1", BALUPI_TAPO_DISCOVERY_TARGET="127.0.0.1",
        HOME=str(work / "home"), XDG_DATA_HOME=str(work / "xdg-data"), PYTHONUNBUFFERED="1",
        **(balupi_nas_env(nas) if nas is not None else {}),
    )
    # `balupi serve` exactly as the console script runs it, but with a command line that does not
    # read "balupi serve": a developer's `pkill -f "balupi serve"` elsewhere on a shared machine
    # must not end the benchmark's server mid-run (seen while validating this harness).
    return Launch([sys.executable, "-c", "import sys; from balupi.cli import main; sys.exit(main(['serve']))"], env, work)


def _launch_balupi_base(port: int, data: Path, work: Path, nas: "SimNasProcess | None" = None) -> Launch:
    """BaluPi from another source tree (`BENCH_BASE_SRC`, e.g. `git archive` of the commit before a
    change), so a change is measured before and after in one run."""
    source = os.environ.get(BASE_SRC_ENV)
    if not source or not (Path(source) / "balupi" / "__init__.py").is_file():
        raise ServerFailed(f"balupi-base: set {BASE_SRC_ENV} (--base-src) to a source tree holding balupi/")
    launch = _launch_balupi(port, data, work, nas)
    launch.env["PYTHONPATH"] = source  # before site-packages, so before the editable install
    return launch


BASE_SRC_ENV = "BENCH_BASE_SRC"
FLOOR_ARGS_ENV = "BENCH_FLOOR_ARGS"

LAUNCHERS = {
    "stock": _launch_stock_wsgidav,
    "rclone": _launch_rclone,
    "nginx": _launch_nginx,
    "balupi": _launch_balupi,
    "balupi-anon": _launch_balupi,
    "balupi-base": _launch_balupi_base,
    "floor": _floor_launcher("plain"),
    "floor-balupi": _floor_launcher("balupi"),
}

KINDS = (  # the column order of the table
    ServerKind("stock", "stock WsgiDAV", "/", python=True),
    ServerKind("rclone", "rclone VFS full", "/", ("rclone",), ("rclone",)),
    ServerKind("nginx", "nginx dav", "/", ("nginx",), ("nginx", "libnginx-mod-http-dav-ext")),
    ServerKind("balupi", "BaluPi", "/dav/", needs_upload=True, python=True, nas=True),
    ServerKind("balupi-anon", "BaluPi anonymous", "/dav/", needs_upload=True, python=True),
    ServerKind("balupi-base", "BaluPi before (logins on)", "/dav/", needs_upload=True, python=True, nas=True),
    ServerKind("floor", "cheroot floor", "/", python=True, small_only=True),
    ServerKind("floor-balupi", "BaluPi's server floor", "/", python=True, small_only=True),
)
DEFAULT_KEYS = ("stock", "rclone", "nginx", "balupi")  # balupi-anon, balupi-base, floor, floor-balupi: with --only
KINDS_BY_KEY = {kind.key: kind for kind in KINDS}


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_json(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None,
              timeout_s: float = 60.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={**({"Content-Type": "application/json"} if data else {}),
                                                       **(headers or {})})
        response = conn.getresponse()
        payload = response.read()
        try:
            return response.status, json.loads(payload or b"{}")
        except ValueError:
            return response.status, {"text": payload[:300].decode("utf-8", "replace")}
    finally:
        conn.close()


class SimNasProcess:
    """The simulated NAS as its own process on 127.0.0.1, awake, with one admin (`NAS_USER`), never
    falling asleep by itself; `suspend()` puts it to sleep through its control port."""

    def __init__(self, root: Path, work: Path):
        root.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "balupi.sim.nas", "--root", str(root), "--mac", NAS_MAC,
                "--user", f"{NAS_USER}:{NAS_PASSWORD}:admin", "--threads", "16"]
        self._log = open(work / "nas.log", "wb")
        self.process = subprocess.Popen(argv, env=_clean_env(PYTHONUNBUFFERED="1"), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        try:
            line = read_ready_line(self.process, timeout_s=START_TIMEOUT_S, name="the simulated NAS",
                                   log_tail=self.log_tail)
        except ServerFailed as exc:
            self.stop()
            raise ServerFailed(f"the simulated NAS did not start: {exc}") from None
        ready = json.loads(line)
        self.port, self.wol_port, self.control_port = ready["port"], ready["wol_port"], ready["control_port"]
        self.dav_url, self.base_url = ready["dav_url"], ready["base_url"]

    def log_tail(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_bytes()[-LOG_TAIL_BYTES:].decode("utf-8", "replace")

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        status, answer = http_json(self.control_port, method, path, body)
        if status != 200:
            raise ServerFailed(f"simulated NAS control {method} {path}: {status} {answer}")
        return answer

    def suspend(self) -> None:
        self.control("POST", "/suspend")

    def counters(self) -> dict:
        return self.control("GET", "/counters")

    def stop(self) -> None:
        stop_process_group(self.process, STOP_TIMEOUT_S)
        self.process.stdout.close()
        self._log.close()


class RunningServer:
    """One server subprocess; use as a context manager so it is stopped whatever happens.

    `cgroup`: the server joins it before exec (bench/pi_class.py). `nas`: the kind's simulated NAS.
    `launch`: instead of the kind's own (the miss benchmark starts BaluPi and rclone on a NAS)."""

    def __init__(self, kind: ServerKind, data: Path, work: Path, extra_env: dict[str, str] | None = None,
                 cgroup=None, nas: SimNasProcess | None = None, launch: Launch | None = None,
                 port: int | None = None):
        self.kind = kind
        self.work = work
        self.nas = nas
        self.cgroup = cgroup
        work.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "server.log"
        self.auth: tuple[str, str] | None = (NAS_USER, NAS_PASSWORD) if nas is not None else None
        launch = launch or kind.launch(self.port, data, work, nas)
        launch.env.update(extra_env or {})
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=cgroup.preexec if cgroup is not None else None)
        self.psutil = psutil.Process(self.process.pid)
        self._stopped = False
        self._exit_before_stop: int | None = None

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": basic_header(*self.auth)} if self.auth else {}

    def url(self, rel: str = "") -> str:
        return self.base + self.kind.root_path + rel

    def log_tail(self) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_bytes()[-LOG_TAIL_BYTES:].decode("utf-8", "replace")
        extra = self.work / "error.log"  # nginx
        if extra.exists():
            text += extra.read_bytes()[-LOG_TAIL_BYTES:].decode("utf-8", "replace")
        return text.strip()

    def died_early(self) -> str:
        """How the server ended before the benchmark stopped it, with its log; "" if it did not."""
        code = self.process.poll() if not self._stopped else self._exit_before_stop
        if code is None:
            return ""
        how = f"the server was killed by {signal.Signals(-code).name}" if code < 0 else f"the server exited with {code}"
        return f"{how}; its log: {self.log_tail()[-600:] or '(empty)'}"

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        wait_until_answers(self.port, method="OPTIONS", path=self.kind.root_path, headers=self.auth_headers(),
                           process=self.process, timeout_s=timeout_s, name=self.kind.label,
                           log_tail=lambda: self.log_tail()[-600:], error=ServerFailed)

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.psutil, *self.psutil.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server and its live child processes."""
        user = system = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            user += times.user
            system += times.system
        return user, system

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def python_pid(self) -> int | None:
        return self.process.pid if self.kind.python else None

    def stop(self) -> None:
        if self._stopped:
            return
        self._exit_before_stop = self.process.poll()
        self._stopped = True
        stop_process_group(self.process, STOP_TIMEOUT_S)  # its whole group: nginx workers, a wedged server
        self._log.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
