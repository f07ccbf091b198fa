"""CPU time of one PROPFIND Depth 1 of a large folder, in process (no sockets), per request.

    .venv/bin/python -m bench.propfind_cpu [--entries 2000] [--rounds 15] [--batch 5] [--seconds 0]

One BaluPi (no NAS, so no login: the login is a few microseconds of a PROPFIND's tens of
milliseconds), a folder of `--entries` files PUT through WebDAV, a tenth of them with two dead
properties as Windows leaves them. Each request is a direct WSGI call whose answer is read to the
end; the figure is the thread CPU time per request, best and median over rounds. Three bodies:
empty (allprop, as Windows, Finder, davfs2 and rclone's first listing send), `<allprop/>`, and the
named properties bench/dav_bench.py asks for.

For an A/B against other code, run it with that tree first on the path:
`cd /tmp/base && PYTHONPATH=/tmp/base .venv/bin/python /path/to/bench/propfind_cpu.py`.
`--seconds N` loops the allprop request for N seconds after measuring (for py-spy).
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

import balupi
from balupi.app import BaluPi
from balupi.settings import load_settings
from bench.inprocess import call

NAMED = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/>'
    b"<D:getcontentlength/><D:getlastmodified/><D:getetag/><D:getcontenttype/></D:prop></D:propfind>"
)
ALLPROP = b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
WIN32_PROPPATCH = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:">'
    b"<D:set><D:prop><Z:Win32CreationTime>Mon, 07 Dec 2026 10:00:00 GMT</Z:Win32CreationTime>"
    b"<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"
)


def build(tmp: Path, entries: int) -> BaluPi:
    settings = load_settings(env={}, cwd=tmp, overrides={
        "data_dir": str(tmp / "data"), "cache_dir": str(tmp / "cache"), "plugins_dir": str(tmp / "no-plugins"),
        "wol_address": "127.0.0.1", "tapo_discovery_target": "127.0.0.1", "energy_enabled": False,
        "log_level": "WARNING"})
    (tmp / "no-plugins").mkdir()
    app = BaluPi(settings)
    app.start()
    assert call(app.wsgi, "MKCOL", "/dav/many")[0].startswith("201")
    for i in range(entries):
        name = f"/dav/many/f{i:05}.txt"
        assert call(app.wsgi, "PUT", name, f"entry {i} of the PROPFIND collection\n".encode())[0].startswith("201")
        if i % 10 == 0:
            assert call(app.wsgi, "PROPPATCH", name, WIN32_PROPPATCH, content_type="application/xml")[0].startswith("207")
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=5, help="requests per round and body")
    parser.add_argument("--seconds", type=float, default=0.0, help="then loop allprop PROPFINDs this long (py-spy)")
    args = parser.parse_args(argv)
    bodies = {"empty body (allprop)": b"", "<allprop/>": ALLPROP, "named props": NAMED}
    with tempfile.TemporaryDirectory(prefix="balupi-propfind-bench-") as tmp_text:
        app = build(Path(tmp_text), args.entries)
        try:
            for name, body in bodies.items():  # warm up, and check the answers
                status, data = call(app.wsgi, "PROPFIND", "/dav/many/", body, depth="1")
                assert status.startswith("207"), (name, status)
                assert data.count(b"<D:response>") == args.entries + 1, name
            samples: dict[str, list[float]] = {name: [] for name in bodies}
            for _ in range(args.rounds):
                for name, body in bodies.items():
                    t0 = time.thread_time()
                    for _ in range(args.batch):
                        call(app.wsgi, "PROPFIND", "/dav/many/", body, depth="1")
                    samples[name].append((time.thread_time() - t0) / args.batch * 1e3)
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                call(app.wsgi, "PROPFIND", "/dav/many/", b"", depth="1")
        finally:
            app.stop()
    print(f"code: {Path(balupi.__file__).parent.parent}; {args.entries} entries, {args.rounds} rounds of {args.batch}")
    print("| request | best ms CPU | median ms CPU |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        print(f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} |")
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(json.dumps({name: {"best_ms": round(min(v), 3), "median_ms": round(statistics.median(v), 3)}
                      for name, v in samples.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
