"""Bit rot on the SSD (issue 17): zero damaged bytes served or uploaded; `cache verify` finds it by content.

The scenarios live in `bench/reliability/integrity.py` (run long with `python -m bench.reliability --long`);
here they run short, and each prints its figures.
"""

from __future__ import annotations

from bench.reliability import integrity


def test_bit_flips_in_clean_and_pending_content_are_never_served_as_good_nor_uploaded():
    f = integrity.bit_flips(long=False)
    assert f["served_damaged"] == 0  # no complete wrong body, ever
    assert f["served_good"] + f["refused_or_cut"] == f["reads"]
    assert f["served_good"] >= 1  # damage found before the first byte: the NAS's copy was served instead
    assert f["refused_or_cut"] >= 1  # damage found later: the connection was cut
    assert f["uploaded_damaged"] == 0 and f["uploaded_pending_damaged"] == 0
    assert f["damaged_reported"] == f["pending_flipped"]  # each kept aside for a person
    assert f["intact_on_nas"] == f["intact_pending"]  # the other changes went on
    assert f["clean_served_after"] == f["clean_flipped"]  # fetched again from the NAS
    assert f["verify_after_exit"] == 0
    assert f["damage_log_lines"] >= f["clean_flipped"] + f["pending_flipped"]


def test_cache_verify_finds_flipped_bits_by_content_and_repairs_what_the_nas_has():
    f = integrity.verify_finds_rot(long=False)
    assert f["found_by_verify"] == f["flipped"] and f["verify_exit"] == 1
    assert f["quarantined"] == f["flipped"]
    assert f["clean_served_after_repair"] == f["clean"]
    assert f["damaged_pending_on_nas"] == 0
