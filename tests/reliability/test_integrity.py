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


def test_cache_verify_with_a_content_budget_checks_the_cache_over_several_runs():
    import random

    rng = random.Random(1)
    files = {f"/b/{i}.bin": rng.randbytes(1_000_000) for i in range(5)}
    with integrity.rig(files=files) as r:
        for path, body in files.items():
            assert r.http.get(r.url(path)).content == body
        r.wait_downloads()
        integrity.flip(r.content_file("/b/4.bin"), 10)  # found only in the run whose turn it is
        runs = [r.balupi("cache", "verify", "--content-gb", "0.002") for _ in range(3)]  # 2 MB each
    outputs = [run.stdout for run in runs]
    assert all("the content of 2 (2.0 MB), the rest next time" in out for out in outputs), outputs
    assert sorted(run.returncode for run in runs) == [0, 0, 1], outputs
    assert sum("damaged content (to fix (--repair)): /b/4.bin" in out for out in outputs) == 1
