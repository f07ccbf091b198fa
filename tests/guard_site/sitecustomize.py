"""Loaded by Python at start-up when a test puts this folder on PYTHONPATH (see conftest.subprocess_env).

It installs the loopback-only guard of tests/loopback.py in the subprocess, reporting any refused
address on stderr, so a `balupi serve` started by a test obeys the same rule as the tests.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_balupi_test_loopback", Path(__file__).parent.parent / "loopback.py")
_guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_guard)
_guard.install(on_violation=_guard.report_to_stderr)
