"""What the plugin hooks cost a cached GET and a PROPFIND, in process, in CPU time per request.

    .venv/bin/python -m bench.plugin_overhead [--rounds 30] [--batch 200]

Three BaluPis in one process (no NAS, data PUT through WebDAV, so every GET is a cache hit), each
request a direct WSGI call (no sockets, so the HTTP server's noise is out):

- `no hook sites`: no plugins, and the one hook call on these paths (the client-operation veto
  middleware, `balupi.plugins.ClientOpVeto`) taken out of the WSGI chain: BaluPi as before the hooks;
- `no plugins`: the built-in defaults only, as shipped;
- `four examples`: plugins/ loaded and configured (notify, quiet_hours, pin_rules, ssh_suspend).

Batches of each kind of request alternate between the three, round after round; the figure is the
median over rounds of each batch's thread CPU time per request (so other processes on a busy
machine change little). Complements bench/dav_bench.py, whose wall-clock figures on a shared
2-core machine move by tens of percent between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
from balupi.app import BaluPi
from bench.inprocess import call
from balupi.settings import load_settings

PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/>'
    b"<D:getcontentlength/><D:getlastmodified/><D:getetag/><D:getcontenttype/></D:prop></D:propfind>"
)
FOUR = {
    "quiet_hours": {"hours": "00:00-23:59"},
    "pin_rules": {"globs": ["/many/*"], "users": ["anonymous"]},
    "notify": {"urls": ["json://127.0.0.1:9/hook"]},  # nothing is sent: no event it sends happens
    "ssh_suspend": {"host": "nas.invalid", "key_file": str(REPO / "setup.cfg")},  # never run: no NAS
}


def build(tmp: Path, name: str, plugins_dir: Path, config: dict, files: int) -> BaluPi:
    settings = load_settings(env={}, cwd=tmp, overrides={
        "data_dir": str(tmp / name / "data"), "cache_dir": str(tmp / name / "cache"), "plugins_dir": str(plugins_dir),
        "plugins": config, "wol_address": "127.0.0.1", "tapo_discovery_target": "127.0.0.1", "energy_enabled": False,
        "log_level": "WARNING"})
    app = BaluPi(settings)
    app.start()
    assert call(app.wsgi, "PUT", "/dav/small.bin", os.urandom(4096))[0].startswith("201")
    assert call(app.wsgi, "MKCOL", "/dav/many")[0].startswith("201")
    for i in range(files):
        assert call(app.wsgi, "PUT", f"/dav/many/f{i:04}.txt", b"x" * 100)[0].startswith("201")
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=200, help="GETs per batch (PROPFINDs: a tenth)")
    parser.add_argument("--files", type=int, default=2000, help="entries in the PROPFIND's collection")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="balupi-plugin-bench-") as tmp_text:
        tmp = Path(tmp_text)
        empty = tmp / "no-plugins"
        empty.mkdir()
        apps = {
            "no hook sites": build(tmp, "bare", empty, {}, args.files),
            "no plugins": build(tmp, "none", empty, {}, args.files),
            "four examples": build(tmp, "four", REPO / "plugins", FOUR, args.files),
        }
        bare_guard = apps["no hook sites"].dav
        bare_guard.next_app = bare_guard.next_app.next_app  # ClientOpVeto -> the fast lane behind it
        loaded = {p["name"] for p in apps["four examples"].plugins.listing()["plugins"] if p["loaded"]}
        assert {"notify", "quiet_hours", "pin_rules", "ssh_suspend"} <= loaded, loaded
        requests = {
            "GET 4 KiB (cache hit)": (args.batch, lambda app: call(app.wsgi, "GET", "/dav/small.bin", keep_body=False)),
            f"PROPFIND Depth 1, {args.files} entries": (
                max(1, args.batch // 10),
                lambda app: call(app.wsgi, "PROPFIND", "/dav/many/", PROPFIND_BODY, keep_body=False, depth="1",
                                 content_type="application/xml")),
        }
        samples: dict[tuple[str, str], list[float]] = {}
        for name, (count, fn) in requests.items():  # warm up, and check the answers
            for app in apps.values():
                status, size = fn(app)
                assert status.startswith(("200", "207")) and size > 0, (name, status)
        started = time.monotonic()
        for _ in range(args.rounds):
            for name, (count, fn) in requests.items():
                for label, app in apps.items():
                    t0 = time.thread_time()
                    for _ in range(count):
                        fn(app)
                    samples.setdefault((name, label), []).append((time.thread_time() - t0) / count * 1e6)
        wall_s = time.monotonic() - started
        for app in apps.values():
            app.stop()
    out = {"rounds": args.rounds, "batch": args.batch, "wall_s": round(wall_s, 1), "load_after": os.getloadavg(),
           "us_per_request": {f"{n} / {l}": round(statistics.median(v), 2) for (n, l), v in samples.items()}}
    print(f"| request | no hook sites, us | no plugins, us | four examples, us | no plugins vs none | four vs none |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in requests:
        base, none, four = (statistics.median(samples[(name, label)]) for label in apps)
        print(f"| {name} | {base:.1f} | {none:.1f} | {four:.1f} | {none / base - 1:+.1%} | {four / base - 1:+.1%} |")
    print(f"\nthread CPU time per request, median of {args.rounds} rounds; load average after: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(json.dumps(out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
