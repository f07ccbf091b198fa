"""Stock WsgiDAV for the benchmark: FilesystemProvider over a folder, on cheroot, anonymous access.

The reference BaluPi is measured against: WsgiDAV as a user would set it up (in-memory property
manager and lock storage, 1 MiB block size, cheroot with the 50 threads of WsgiDAV's own CLI),
with request logging off, as BaluPi has it. Runs until SIGTERM or SIGINT.

    .venv/bin/python -m bench.stock_wsgidav --root DIR --port PORT [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import signal
import sys

from cheroot import wsgi
from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp

BLOCK_SIZE_BYTES = 1 << 20
SERVER_THREADS = 50  # what `wsgidav` (server_cli) gives cheroot
SHUTDOWN_TIMEOUT_S = 5


def build_app(root: str) -> WsgiDAVApp:
    return WsgiDAVApp({
        "provider_mapping": {"/": FilesystemProvider(root)},
        "block_size": BLOCK_SIZE_BYTES,
        "property_manager": True,
        "lock_storage": True,
        "http_authenticator": {"domain_controller": None, "accept_basic": True, "accept_digest": False,
                               "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": True}},
        "verbose": 1,
        "logging": {"enable": False},
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    server = wsgi.Server((args.host, args.port), build_app(args.root), numthreads=SERVER_THREADS,
                         server_name="stock-wsgidav", shutdown_timeout=SHUTDOWN_TIMEOUT_S)

    def on_signal(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
