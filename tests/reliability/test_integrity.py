"""Bit rot on the SSD (issue 17): zero damaged bytes served or uploaded; `cache verify` finds it by content.

The scenarios live in `bench/reliability/integrity.py` (run long with `python -m bench.reliability --long`);
here they run short, and each prints its figures.
"""

from __future__ import annotations

import json

import pytest

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


def test_block_checksums_do_not_depend_on_how_the_bytes_arrive(tmp_path):
    import os
    import random

    from balupi.cache.integrity import BlockHasher, hash_fd

    rng = random.Random(7)
    data = rng.randbytes(3 * (1 << 20) + 12345)
    whole = BlockHasher()
    whole.update(data)
    pieces = BlockHasher()
    offset = 0
    while offset < len(data):
        step = rng.choice([1, 100, 8192, 65536, 1 << 20, (1 << 20) + 1])
        pieces.update(data[offset:offset + step])
        offset += step
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        on_disk = hash_fd(fd, len(data))
    finally:
        os.close(fd)
    assert whole.blocks_hex() == pieces.blocks_hex() == on_disk
    assert len(on_disk) == 4 * 32  # four blocks, 16 bytes each, in hex
    empty = BlockHasher()
    assert len(empty.blocks_hex()) == 32  # an empty file has the checksum of no bytes


def test_ranges_of_content_not_yet_verified_check_only_the_blocks_they_touch():
    import random

    rng = random.Random(3)
    body = rng.randbytes(3 * (1 << 20) + 999)
    with integrity.rig(files={"/r": None}) as r:
        r.http.request("PROPFIND", r.url("/r/"), headers={"Depth": "1"})
        r.suspend()
        assert r.http.put(r.url("/r/f.bin"), data=body).status_code == 201
        r.restart()  # nothing verified by this process
        span = r.http.get(r.url("/r/f.bin"), headers={"Range": "bytes=1048570-1048590"})
        assert span.status_code == 206 and span.content == body[1048570:1048591]
        multi = r.http.get(r.url("/r/f.bin"), headers={"Range": "bytes=0-9,3145728-3145737"})
        assert multi.status_code == 206 and body[:10] in multi.content and body[3145728:3145738] in multi.content
        integrity.flip(r.content_file("/r/f.bin"), 2 * (1 << 20) + 5)  # in the third block
        first = r.http.get(r.url("/r/f.bin"), headers={"Range": "bytes=0-99"})
        assert first.status_code == 206 and first.content == body[:100]  # the damage is elsewhere
        third = r.http.get(r.url("/r/f.bin"), headers={"Range": f"bytes={2 * (1 << 20)}-{2 * (1 << 20) + 99}"})
        assert third.status_code == 500 and "damaged" in third.text  # a change only the Pi had
        rows = r.app.db.query("SELECT path, kind FROM conflicts")
        assert [tuple(row) for row in rows] == [("/r/f.bin", "damaged")]
        assert r.app.db.query_one("SELECT count(*) FROM journal WHERE state = 'pending'")[0] == 0


def test_a_cache_from_before_xxh3_verifies_clean_and_bit_rot_is_found_under_either_algorithm():
    f = integrity.mixed_checksums(long=False)
    assert f["algs_written"] == ["xxh3-128"]  # new content, downloaded or uploaded
    assert f["served_after_upgrade"] == f["old_and_new"]  # BLAKE2b sidecars checked with BLAKE2b
    assert f["copy_of_old"] == {"status": 201, "alg": "xxh3-128", "served_right": True}
    assert f["verify_after_upgrade_exit"] == 0, f["verify_after_upgrade_out"]
    assert " 0 damaged, 0 damaged pending" in f["verify_after_upgrade_out"]
    assert f["found_by_verify"] == f["flipped"] and f["rot_verify_exit"] == 1
    # An algorithm this version does not know: reported as damage, with the reason, never a crash.
    assert len(f["unknown_reported"]) == 1 and "'sha3-512'" in f["unknown_reported"][0]
    assert "not one this BaluPi knows" in f["unknown_reported"][0]
    assert f["tracebacks"] == 0
    assert f["quarantined"] == sorted(["/m/old0.bin", "/m/new0.bin", "/m/old-pending.bin", "/m/new-pending.bin",
                                       "/m/unknown.bin"])
    assert f["clean_served_after_repair"] == f["clean"]  # fetched again from the NAS
    assert f["damaged_pending_on_nas"] == 0  # under either algorithm, never uploaded
    assert " 0 damaged, 0 damaged pending" in f["verify_after_repair_out"]


def test_each_block_is_checked_with_the_algorithm_its_sidecar_names():
    import hashlib
    import random

    import xxhash

    from balupi.cache.integrity import BLOCK_BYTES, BlockHasher, ContentDamaged, Meta, check_block

    data = random.Random(9).randbytes(BLOCK_BYTES + 10)
    blocks = [data[:BLOCK_BYTES], data[BLOCK_BYTES:]]
    new = BlockHasher()
    new.update(data)
    assert new.blocks_hex() == "".join(xxhash.xxh3_128_hexdigest(b) for b in blocks)  # the reference XXH3
    legacy = "".join(hashlib.blake2b(b, digest_size=16).hexdigest() for b in blocks)
    for alg, hexes in (("xxh3-128", new.blocks_hex()), ("blake2b-128", legacy)):
        meta = Meta.from_bytes(Meta(view="", path="/f", state="clean", size=len(data), blocks=hexes, alg=alg).to_bytes())
        for index, block in enumerate(blocks):
            check_block("k", meta, index, block)
            rotten = bytearray(block)
            rotten[len(rotten) // 2] ^= 0x01
            with pytest.raises(ContentDamaged, match=f"block {index} does not match its {alg} checksum"):
                check_block("k", meta, index, bytes(rotten))
    # A checksum under the wrong algorithm is damage, not a pass.
    swapped = Meta(view="", path="/f", state="clean", size=len(data), blocks=legacy, alg="xxh3-128")
    with pytest.raises(ContentDamaged):
        check_block("k", swapped, 0, blocks[0])
    unknown = Meta(view="", path="/f", state="clean", size=len(data), blocks=legacy, alg="crc64")
    with pytest.raises(ContentDamaged, match="'crc64', not one this BaluPi knows"):
        check_block("k", unknown, 0, blocks[0])
    # A sidecar from before the algorithm was recorded can only be BLAKE2b; a name that is not a
    # string is an unreadable sidecar (ValueError: `ContentStore.read_meta` makes it ContentDamaged).
    raw = json.loads(Meta(view="", path="/f", state="clean", size=len(data), blocks=legacy).to_bytes())
    del raw["alg"]
    assert Meta.from_bytes(json.dumps(raw).encode()).alg == "blake2b-128"
    raw["alg"] = ["xxh3-128"]
    with pytest.raises(ValueError):
        Meta.from_bytes(json.dumps(raw).encode())
