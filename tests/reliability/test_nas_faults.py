"""Issue 17, NAS faults through our TCP fault proxy (bench/reliability/nas_faults.py): no client ever
gets wrong bytes, every acknowledged upload reaches the NAS, a frozen NAS is an error within 30 s."""

from __future__ import annotations

from bench.reliability.nas_faults import frozen_nas, nas_faults_reads, nas_faults_write_back

CLIENT_TIMEOUT_S = 30  # Windows' WebDAV redirector and davfs2


def test_misses_and_ranged_misses_through_cut_reset_and_stalled_connections_never_give_wrong_bytes():
    figures = nas_faults_reads(long=False)
    print("NAS faults, reads:", figures)
    assert figures["wrong_bytes_or_bad_retry"] == 0
    assert figures["faults_applied"] >= 6
    stalled = figures["cases"]["stall 25 s after 200 KB"][0]
    assert float(stalled.split(" in ")[1].split(" s")[0]) < CLIENT_TIMEOUT_S / 2 + 1


def test_every_acknowledged_upload_reaches_the_nas_through_cut_reset_and_stalled_write_backs():
    figures = nas_faults_write_back(long=False)
    print("NAS faults, write-back:", figures)
    assert figures["uploads_acknowledged"] == figures["uploads"]
    assert figures["write_back_done"]
    assert figures["on_nas_with_right_bytes"] == figures["uploads_acknowledged"]
    assert len(figures["faults_applied"]) >= 3
    assert figures["stray_files_on_nas"] == []


def test_a_frozen_nas_gives_the_client_an_error_well_within_its_timeout_and_cached_reads_go_on():
    figures = frozen_nas(long=False)
    print("frozen NAS:", figures)
    assert figures["miss_while_frozen"].split()[1] in ("503", "502", "504")
    assert figures["miss_error_after_s"] <= CLIENT_TIMEOUT_S * 0.6
    assert figures["cached_right_bytes"] and all(c.startswith("200") for c in figures["cached_while_frozen"])
    assert figures["put_while_frozen"] == 201
    assert figures["upload_reached_nas_after_thaw"]
    assert figures["miss_after_thaw"] == "200 right=True"
