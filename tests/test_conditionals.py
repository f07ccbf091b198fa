"""Conditional requests against the rule that ETags follow content versions (issue 12, decision 60).

If-Match, If-None-Match, If-Unmodified-Since and `If` (entity tags, lock tokens) on GET, HEAD, PUT,
DELETE, MOVE, COPY, PROPPATCH and LOCK, each evaluated against what a client saw when it wrote the
file, at every moment of that file's life: NAS asleep, written but not yet synced, while its
write-back is in flight, right after it, and evicted after it. The answer must not depend on the
moment: a validator the client holds stays valid until the content changes.
"""

from __future__ import annotations

import threading
from email.utils import formatdate, parsedate_to_datetime

import pytest

from tests.davkit import listing, wait_until
from tests.stack import stack_factory  # noqa: F401

OK = {"GET": 200, "HEAD": 200, "PUT": 204, "DELETE": 204, "MOVE": 201, "COPY": 201, "PROPPATCH": 207, "LOCK": 200}
METHODS = tuple(OK)
LOCK_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>")
PROPPATCH_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:t">'
                  b"<D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>")


def _earlier(last_modified: str) -> str:
    return formatdate(parsedate_to_datetime(last_modified).timestamp() - 3600, usegmt=True)


# (case, headers from (etag, last_modified, lock token), expected: "ok", "412" or "304-on-read")
CASES = [
    ("if-match current", lambda e, lm, t: {"If-Match": e}, "ok"),
    ("if-match *", lambda e, lm, t: {"If-Match": "*"}, "ok"),
    ("if-match stale", lambda e, lm, t: {"If-Match": '"stale"'}, "412"),
    ("if-none-match current", lambda e, lm, t: {"If-None-Match": e}, "304-on-read"),
    ("if-none-match stale", lambda e, lm, t: {"If-None-Match": '"stale"'}, "ok"),
    ("if-unmodified-since current", lambda e, lm, t: {"If-Unmodified-Since": lm}, "ok"),
    ("if-unmodified-since earlier", lambda e, lm, t: {"If-Unmodified-Since": _earlier(lm)}, "412"),
    ("if etag current", lambda e, lm, t: {"If": f"([{e}])"}, "ok"),
    ("if etag stale", lambda e, lm, t: {"If": '(["stale"])'}, "412"),
    ("if locktoken and etag", lambda e, lm, t: {"If": f"(<{t}> [{e}])"}, "ok"),
    ("if locktoken and stale etag", lambda e, lm, t: {"If": f'(<{t}> ["stale"])'}, "412"),
]
# While a write-back of the file is in flight: the validators the client holds.
IN_FLIGHT = [c for c in CASES if c[0] in ("if-match current", "if-unmodified-since current", "if locktoken and etag")]


def expected_status(method: str, outcome: str) -> int:
    if outcome == "ok":
        return OK[method]
    if outcome == "304-on-read":
        return 304 if method in ("GET", "HEAD") else 412
    return 412


def request(stack, method: str, path: str, n: int, headers: dict):
    extra: dict = {}
    if method == "PUT":
        extra["data"] = b"written under a condition"
    elif method in ("MOVE", "COPY"):
        headers = {**headers, "Destination": stack.url(f"/dest-{n}.txt"), "Overwrite": "T"}
    elif method == "PROPPATCH":
        extra["data"] = PROPPATCH_BODY
    elif method == "LOCK" and "<" not in headers.get("If", ""):
        extra["data"] = LOCK_BODY  # a new lock; with a token in If, a refresh (no body)
    return stack.http.request(method, stack.url(path), headers=headers, **extra)


def prepare(stack, method: str, n: int, case: str, make_headers) -> tuple[str, dict]:
    """A file as a client wrote it, and the conditional headers built from what it then saw."""
    path = f"/c-{n}.txt"
    assert stack.http.put(stack.url(path), data=b"content the client wrote %d" % n).status_code == 201
    head = stack.http.head(stack.url(path))
    token = "opaquelocktoken:not-held"
    if "locktoken" in case:
        locked = stack.http.request("LOCK", stack.url(path), data=LOCK_BODY)
        assert locked.status_code == 200, locked.status_code
        token = locked.headers["Lock-Token"].strip("<>")
    return path, make_headers(head.headers["ETag"], head.headers["Last-Modified"], token)


@pytest.mark.parametrize("moment", ["asleep", "unsynced", "write-back in flight", "synced", "evicted"])
def test_conditionals_answer_the_same_at_every_moment_of_a_files_life(stack_factory, moment):
    stack = stack_factory(prefetch_budget_mb=0, refresh_walk_budget_s=0)
    listing(stack, "/")
    if moment == "asleep":
        stack.suspend_nas()
    wrong = []

    def check(method, case, outcome, response):
        want = expected_status(method, outcome)
        if response.status_code != want:
            wrong.append(f"{method} {case}: {response.status_code}, expected {want}")

    if moment == "write-back in flight":
        # One write-back per case, and the request sent while its upload of the file is under way.
        n = 0
        for method in METHODS:
            for case, make_headers, outcome in IN_FLIGHT:
                n += 1
                path, headers = prepare(stack, method, n, case, make_headers)
                stack.nas.faults.latency_s = 0.1
                run = threading.Thread(target=stack.app.sync.run_once)
                run.start()
                try:
                    assert wait_until(lambda: stack.app.db.query_one(
                        "SELECT 1 FROM journal WHERE path = ? AND phase = 'uploading'", (path,)) is not None, 10)
                    check(method, case, outcome, request(stack, method, path, n, headers))
                finally:
                    run.join()
                    stack.nas.faults.latency_s = 0
    else:
        prepared = []
        n = 0
        for method in METHODS:
            for case, make_headers, outcome in CASES:
                n += 1
                prepared.append((method, case, outcome, n, *prepare(stack, method, n, case, make_headers)))
        if moment in ("synced", "evicted"):
            stack.app.sync.run_once()
            assert stack.app.sync.pending()["count"] == 0
        if moment == "evicted":
            stack.app.provider.cache.evict_to(0)
            assert not any(e.cached for e in stack.app.provider.index.children("", "/"))
        for method, case, outcome, n, path, headers in prepared:
            check(method, case, outcome, request(stack, method, path, n, headers))

    assert wrong == [], f"{moment}: " + "; ".join(wrong)

    # Whatever the moment, the NAS ends up with what BaluPi shows.
    if moment == "asleep":
        stack.wake_nas()
    stack.nas.faults.latency_s = 0
    stack.app.sync.run_once()
    assert stack.app.sync.pending()["count"] == 0
    for entry in stack.app.provider.index.children("", "/"):
        if not entry.is_dir:
            shown = stack.http.get(stack.url(entry.path)).content
            assert (stack.nas.root / entry.name).read_bytes() == shown, entry.path


@pytest.mark.parametrize("method", ["PUT", "LOCK"])
@pytest.mark.parametrize("if_match", ['"l-0123"', "*"])
def test_if_match_on_a_file_that_is_gone_is_refused(stack_factory, method, if_match):
    """A client updating the version it saw (davfs2's delayed PUT) must not bring back a file
    another client deleted meanwhile: If-Match is false when there is no current version."""
    stack = stack_factory(prefetch_budget_mb=0, refresh_walk_budget_s=0)
    listing(stack, "/")
    body = LOCK_BODY if method == "LOCK" else b"resurrected"
    assert stack.http.request(method, stack.url("/gone.txt"), data=body, headers={"If-Match": if_match}).status_code == 412
    assert stack.app.provider.index.get("", "/gone.txt") is None
    assert stack.http.request(method, stack.url("/gone.txt"), data=body).status_code == 201  # without: created
