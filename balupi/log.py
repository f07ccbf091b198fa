"""Logging to stderr, one line per event, friendly to journald (which adds its own timestamps).

Secrets never reach a log line: `Settings.__repr__` masks them, and `SecretFilter` replaces any
registered secret value (passwords, keys, tokens) that still finds its way into a message.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Never print this value: log lines containing it show *** instead."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _secrets_lock:
        secrets = list(_secrets)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once: stderr, level from settings, secrets filtered."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_balupi", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._balupi = True  # type: ignore[attr-defined]
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(SecretFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries are chatty at INFO; keep their warnings.
    for name in ("wsgidav", "cheroot", "urllib3", "kasa", "schedule"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
