"""Issue 17, item 2: load is accepted cleanly, and cached reads never wait on the NAS
(bench/reliability/load.py: BaluPi and the simulated NAS as their own processes)."""

from __future__ import annotations

from bench.reliability.load import load_mix, wake_burst
from balupi.limits import descriptor_budget
from balupi.settings import load_settings


def test_sixty_four_mixed_clients_from_sixteen_addresses_get_no_resets_no_errors_and_right_bytes(tmp_path):
    figures = load_mix(long=False)
    print("load mix:", figures)
    assert figures["connection_errors"] == {}
    assert figures["connects_slower_than_0_9_s"] == 0  # no SYN retried after a full listen queue
    assert set(figures["statuses"]) <= {200, 201, 204, 207}  # no 5xx, no 423 (each client locks its own files)
    assert figures["wrong_bytes"] == 0
    assert figures["write_back_done"]
    assert figures["requests"] > 500
    first_sample_mb = figures["rss_samples_s_mb_fds_pending"][0][1]
    assert figures["rss_mb_after"] <= first_sample_mb + 30
    assert figures["fds_after"] <= descriptor_budget(load_settings(env={}, cwd=tmp_path))


def test_cached_reads_and_listings_do_not_wait_while_forty_misses_wait_for_the_nas_to_boot():
    figures = wake_burst(long=False)
    print("wake burst:", figures)
    assert figures["cached_requests_during_wake"] >= 20
    assert figures["cached_max_ms"] < 1000  # the boot takes 8 s
    assert figures["misses_200"] >= 1 and figures["misses_other"] == 0
    assert figures["misses_200"] + figures["misses_503"] == figures["misses_waiting"]
    assert figures["wrong_bytes"] == 0
