"""WebDAV compliance: the `litmus` suite (Debian package `litmus`) against /dav/, all five default
suites (basic, copymove, props, locks, http), with the simulated NAS awake and with it asleep,
logged in as the NAS user alice (HTTP Basic, checked by the NAS, then offline).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import pytest

from tests.stack import NAS_PASSWORD, NAS_USER, stack, stack_factory  # noqa: F401

LITMUS_TESTS = 104  # basic 16 + copymove 13 + props 30 + locks 41 + http 4
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


def run_litmus(url: str, user: str = NAS_USER, password: str = NAS_PASSWORD) -> tuple[int, int, str]:
    litmus = shutil.which("litmus")
    assert litmus, "litmus is not installed (apt-get install litmus); .ci/run installs it"
    with tempfile.TemporaryDirectory() as scratch:  # litmus writes debug.log and child.log where it runs
        proc = subprocess.run([litmus, url, user, password], capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, cwd=scratch)
    output = proc.stdout + proc.stderr
    passed = failed = 0
    for _suite, _run, ok, bad in SUMMARY.findall(output):
        passed += int(ok)
        failed += int(bad)
    return passed, failed, output


def failures(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if "FAIL" in line or "WARNING" in line)


def test_litmus_passes_everything_with_the_nas_awake(stack):
    passed, failed, output = run_litmus(stack.url("/"))
    assert (passed, failed) == (LITMUS_TESTS, 0), failures(output)


def test_litmus_passes_everything_with_the_nas_asleep_and_never_wakes_it(stack):
    listing = stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    assert listing.status_code == 207  # the index knows the root while the NAS is awake
    stack.suspend_nas()

    passed, failed, output = run_litmus(stack.url("/"))

    assert (passed, failed) == (LITMUS_TESTS, 0), failures(output)
    assert stack.nas.request_count() == 0
    assert stack.nas.magic_packet_count == 0
