"""PROPFIND Depth 1 of a 2000-entry folder while a user holds a lock, before and after a change.

    .venv/bin/python -m bench.propfind_lock --base-src /tmp/base [--pi-class] [--runs 5] [--entries 2000]

Office (Word and Excel from Explorer or Finder, LibreOffice over davfs2) holds a lock on a document
for as long as it is open. This measures what that does to folder listings: BaluPi from this tree
(`balupi`) and from another source tree (`balupi-base`, e.g. `git archive main | tar -x -C /tmp/base`),
each started as dav_bench starts it (logins on, a simulated NAS that is suspended after the first
login, so every request is a cache hit), the folder `many/` of `--entries` files PUT through WebDAV.
Then PROPFIND Depth 1 of `many/` is measured in three states, with two bodies each (the empty body
of Windows, Finder and davfs2, which is allprop; and dav_bench's named properties):

- `no lock`: no lock in the user's view;
- `lock elsewhere`: an exclusive depth-0 lock on `other/report.docx` (a document open in another folder);
- `lock in folder`: that, and one on `many/f00007.txt` (the listing holds a locked member).

Per state and body: one warm-up, then `--runs` requests; the figures are the median wall time (a
client outside the server, keep-alive connection) and the server's CPU ms per request (psutil, its
process tree). Each answer is checked: 207, `--entries` + 1 responses, and in `lock in folder` the
lock's token on the locked member. With `--pi-class` each server runs in the Pi-class cgroup
(bench/pi_class.py, root needed), limited after its upload. The two servers run one after the
other, base first (`--after-first`: this tree's first); each alone. Prints a markdown table and a JSON line on stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree as ET

from bench import pi_class
from bench.dav_bench import upload
from bench.dav_servers import BASE_SRC_ENV, KINDS_BY_KEY, RunningServer, SimNasProcess

NAMED = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/>'
    b"<D:getcontentlength/><D:getlastmodified/><D:getetag/><D:getcontenttype/></D:prop></D:propfind>"
)
BODIES = {"allprop (empty body)": b"", "named props": NAMED}
LOCK_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    b"<D:locktype><D:write/></D:locktype><D:owner><D:href>household member</D:href></D:owner></D:lockinfo>"
)
STATES = ("no lock", "lock elsewhere", "lock in folder")
LOCKED_MEMBER = "many/f00007.txt"


def make_data(root: Path, entries: int) -> None:
    (root / "many").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "other" / "report.docx").write_bytes(b"PK\x03\x04 an open document\n")
    for i in range(entries):
        (root / "many" / f"f{i:05d}.txt").write_text(f"entry {i} of the PROPFIND collection\n")


class Client:
    def __init__(self, server: RunningServer):
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)

    def request(self, method: str, rel: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, bytes]:
        self.conn.request(method, self.server.kind.root_path + rel, body=body,
                          headers={**self.server.auth_headers(), **headers})
        response = self.conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def lock(self, rel: str) -> str:
        status, headers, body = self.request("LOCK", rel, LOCK_BODY, {"Depth": "0", "Timeout": "Second-3600",
                                                                      "Content-Type": "application/xml"})
        if status != 200:
            raise RuntimeError(f"LOCK {rel}: {status} {body[:200]!r}")
        return headers["Lock-Token"].strip("<>")

    def propfind(self, body: bytes, entries: int, token: str | None) -> float:
        t0 = time.perf_counter()
        status, _, answer = self.request("PROPFIND", "many/", body, {"Depth": "1", "Content-Type": "application/xml"})
        seconds = time.perf_counter() - t0
        if status != 207:
            raise RuntimeError(f"PROPFIND: {status}")
        responses = ET.fromstring(answer).findall("{DAV:}response")
        if len(responses) != entries + 1:
            raise RuntimeError(f"PROPFIND: {len(responses)} responses, expected {entries + 1}")
        if token is not None and body == b"":
            locked = [r for r in responses if r.findtext("{DAV:}href").endswith("/" + LOCKED_MEMBER)]
            if token.encode() not in ET.tostring(locked[0]):
                raise RuntimeError("PROPFIND: the locked member does not show its lock")
        return seconds


def measure(server: RunningServer, entries: int, runs: int) -> dict:
    client = Client(server)
    figures: dict = {}
    token = None
    for state in STATES:
        if state == "lock elsewhere":
            client.lock("other/report.docx")
        elif state == "lock in folder":
            token = client.lock(LOCKED_MEMBER)
        for label, body in BODIES.items():
            client.propfind(body, entries, token)  # warm-up
            cpu0 = sum(server.cpu_times())
            times = [client.propfind(body, entries, token) for _ in range(runs)]
            cpu_ms = (sum(server.cpu_times()) - cpu0) / runs * 1e3
            figures[f"{state} / {label}"] = {"ms": round(statistics.median(times) * 1e3, 1), "cpu_ms": round(cpu_ms, 1),
                                             "runs_ms": [round(t * 1e3, 1) for t in times]}
            print(f"  {server.kind.key} {state} / {label}: {figures[f'{state} / {label}']['ms']} ms, "
                  f"{cpu_ms:.1f} ms CPU", file=sys.stderr)
    client.conn.close()
    return figures


def run_one(key: str, data: Path, work: Path, entries: int, runs: int, pi: bool) -> dict:
    kind = KINDS_BY_KEY[key]
    cgroup = pi_class.PiClassCgroup(key) if pi else None
    nas = SimNasProcess(work / key / "nas-root", work / key)
    try:
        with RunningServer(kind, data, work / key, cgroup=cgroup, nas=nas) as server:
            server.wait_ready()
            status, _, _ = Client(server).request("PROPFIND", "", b"", {"Depth": "1"})  # the first login
            if status != 207:
                raise RuntimeError(f"first login: {status}")
            nas.suspend()
            upload(server, data)
            if cgroup is not None:
                if server.process.pid not in cgroup.members():
                    raise RuntimeError("the server is not in its cgroup")
                cgroup.limit()
            return measure(server, entries, runs)
    finally:
        nas.stop()
        if cgroup is not None:
            cgroup.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-src", type=Path, required=True, help="the source tree measured as balupi-base")
    parser.add_argument("--pi-class", action="store_true", help="each server in the Pi-class cgroup (root)")
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--after-first", action="store_true", help="run this tree's BaluPi first (order effects)")
    args = parser.parse_args(argv)
    os.environ[BASE_SRC_ENV] = str(args.base_src.resolve())
    results: dict = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="balupi-propfind-lock-") as tmp_text:
        tmp = Path(tmp_text)
        make_data(tmp / "data", args.entries)
        for key in ("balupi", "balupi-base") if args.after_first else ("balupi-base", "balupi"):
            print(f"{key}:", file=sys.stderr)
            results[key] = run_one(key, tmp / "data", tmp / "work", args.entries, args.runs, args.pi_class)
    budget = "Pi-class (a tenth of one core)" if args.pi_class else "unlimited"
    print(f"PROPFIND Depth 1 of {args.entries} entries, {budget}, median of {args.runs}; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| state / body | before ms | before CPU ms | after ms | after CPU ms | after / before |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in results["balupi"]:
        b, a = results["balupi-base"][name], results["balupi"][name]
        print(f"| {name} | {b['ms']:.1f} | {b['cpu_ms']:.1f} | {a['ms']:.1f} | {a['cpu_ms']:.1f} | {a['ms'] / b['ms']:.2f} |")
    print(json.dumps({"pi_class": args.pi_class, "entries": args.entries, "runs": args.runs, **results}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
