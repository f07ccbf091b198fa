"""Issue 17, item 5: a database locked by another process for longer than the busy timeout answers
503 with Retry-After (not 500), each refusal logged once with its cause in BaluPi's own log
(bench/reliability/locked_db.py)."""

from __future__ import annotations

from bench.reliability.locked_db import locked_database


def test_a_locked_database_is_503_with_retry_after_logged_once_each_and_reads_go_on():
    figures = locked_database(long=False)
    print("locked database:", figures)
    puts = figures["statuses"]["PUT"]
    assert 500 not in puts and puts.get(503, 0) >= 1
    assert set(puts) <= {201, 503}
    assert figures["retry_after"] == ["10"]
    assert figures["slowest_s"]["PUT"] < 15  # within a client's 30 s
    assert set(figures["statuses"]["GET cached"]) == {200}
    assert set(figures["statuses"]["PROPFIND"]) == {207}
    assert figures["refusal_log_lines"] == figures["refusals"]
    assert figures["database_tracebacks_in_log"] == 0
    assert figures["put_after_release"] == 201
