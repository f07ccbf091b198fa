"""NAS answers BaluPi cannot read, and bodies the NAS breaks off, are "the NAS is unavailable"
(decision 240): a client gets 503 with Retry-After (or, once the head of its answer is sent, a
closed connection and a short body), a job stops with a line in the log. Never a 500, never a
traceback (CI's demo test fails on one).

The simulated NAS garbles answers on purpose (`faults.garble`: the body replaced by as many NUL
bytes, optionally claiming a Content-Encoding it does not have) and cuts bodies (`faults.drop_get`).
"""

from __future__ import annotations

import logging
import os

import pytest
import requests

from tests.davkit import (
    data_files,
    index_row,
    listing,
    propfind,
    referenced_keys,
    stack_with,
    temp_files,
    wait_downloads_idle,
)
from tests.stack import stack_factory  # noqa: F401

FILES = {"/docs/a.txt": b"alpha", "/docs/b.txt": b"beta"}
MIB = 1 << 20
BIG = os.urandom(4 * MIB)
BIG_PATH = "/videos/clip.mp4"


def errors_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("encoding", [None, "gzip"], ids=["not-xml", "bad-gzip"])
def test_a_garbled_listing_answers_503_with_retry_after_and_the_next_listing_works(stack_factory, tmp_path, caplog,
                                                                                  encoding):
    """not-xml: the multistatus does not parse (ET.ParseError); bad-gzip: the body claims gzip and
    requests fails to decode it (ContentDecodingError). Both were a 500 with a traceback."""
    stack = stack_with(stack_factory, tmp_path, FILES)
    listing(stack, "/")
    assert not index_row(stack.app, "/docs")["listed"]
    stack.nas.faults.garble(count=1, method="PROPFIND", encoding=encoding)
    caplog.set_level("INFO", logger="balupi")

    response = propfind(stack, "/docs")

    assert [r.fault for r in stack.nas.requests if r.path == "/dav/docs/"] == ["garble"]
    assert response.status_code == 503, response.text[:300]
    assert int(response.headers["Retry-After"]) >= 1
    assert "could not be read" in response.text
    assert not index_row(stack.app, "/docs")["listed"]
    assert errors_logged(caplog) == []
    assert set(listing(stack, "/docs")) == {"/docs", "/docs/a.txt", "/docs/b.txt"}  # the rule is used up


def test_a_garbled_listing_stops_the_refresh_walk_quietly(stack_factory, tmp_path, caplog):
    stack = stack_with(stack_factory, tmp_path, FILES)
    listing(stack, "/")
    stack.nas.faults.garble(count=None, method="PROPFIND")
    caplog.set_level("INFO", logger="balupi")

    result = stack.app.refresher.walk(budget_s=30)  # raised ParseError: the job logged a traceback

    assert result.listed == 0
    assert any(r.fault == "garble" for r in stack.nas.requests)
    assert not index_row(stack.app, "/docs")["listed"]
    assert errors_logged(caplog) == []
    assert any("could not be read" in r.getMessage() for r in caplog.records)  # the line that says why
    stack.nas.faults.garble(count=0)
    assert stack.app.refresher.walk(budget_s=30).listed >= 1
    assert index_row(stack.app, "/docs")["listed"]


def test_a_garbled_listing_during_the_write_back_keeps_the_change_for_a_retry(stack_factory, tmp_path):
    stack = stack_with(stack_factory, tmp_path, FILES)
    listing(stack, "/")
    listing(stack, "/docs")
    assert stack.http.put(stack.url("/docs/a.txt"), data=b"alpha, edited").status_code == 204
    stack.nas.faults.garble(count=1, method="PROPFIND")  # the write-back's look at the target first

    first = stack.app.sync.run_once()  # raised ParseError out of the sync job

    assert first.failed == 1 and first.applied == 0
    row = stack.app.db.query_one("SELECT attempts, last_error FROM journal WHERE state = 'pending'")
    assert row["attempts"] == 1 and "could not be read" in row["last_error"]
    assert (stack.nas.root / "docs" / "a.txt").read_bytes() == b"alpha"
    stack.app.db.raw().execute("UPDATE journal SET next_at = 0")  # don't wait out the backoff
    assert stack.app.sync.run_once().applied == 1
    assert (stack.nas.root / "docs" / "a.txt").read_bytes() == b"alpha, edited"
    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0  # a garbled look is no conflict


# -- a miss's body broken off after its head was sent ------------------------------------------------


def assert_no_partial_entry(app) -> None:
    assert data_files(app) <= referenced_keys(app)
    assert temp_files(app) == []


def read_all(stack, headers: dict | None = None) -> tuple[int, int]:
    """(status, bytes received) of a GET of BIG_PATH; a broken-off body ends the count."""
    received = 0
    with stack.http.get(stack.url(BIG_PATH), headers=headers or {}, stream=True, timeout=30) as response:
        try:
            for chunk in response.iter_content(64 * 1024):
                received += len(chunk)
        except requests.RequestException:
            pass
        return response.status_code, received


@pytest.mark.parametrize("ranged", [False, True], ids=["shared-download", "passed-through-range"])
def test_a_miss_the_nas_breaks_off_closes_the_client_connection_without_a_traceback(stack_factory, tmp_path,
                                                                                    capfd, caplog, ranged):
    stack = stack_with(stack_factory, tmp_path, {BIG_PATH: BIG})
    listing(stack, "/")
    listing(stack, "/videos")
    # the ranged GET passed through, and the whole-file download behind it: both broken off
    stack.nas.faults.drop_get(after_bytes=1536 * 1024, count=2 if ranged else 1)
    caplog.set_level("INFO", logger="balupi")
    capfd.readouterr()

    status, received = read_all(stack, {"Range": f"bytes=0-{3 * MIB}"} if ranged else None)

    wait_downloads_idle(stack.app)
    assert status == (206 if ranged else 200)
    assert received < (3 * MIB + 1 if ranged else len(BIG))  # the client can tell: a short body
    assert index_row(stack.app, BIG_PATH)["cache_key"] is None
    assert_no_partial_entry(stack.app)

    assert "Traceback" not in capfd.readouterr().err
    assert any("cut short" in r.getMessage() for r in caplog.records)
    assert errors_logged(caplog) == []
    stack.nas.faults.clear()
    again = stack.http.get(stack.url(BIG_PATH), timeout=30)
    assert again.status_code == 200 and again.content == BIG
