"""Write-back to the NAS: order, temp-name uploads, verification, conflicts, retries (issue 5)."""

from __future__ import annotations

import time

from balupi.sim.nas import DAV_PREFIX
from tests.helpers import sha
from tests.stack import stack, stack_factory  # noqa: F401


def pending(stack) -> list:
    return stack.app.db.query("SELECT op, path FROM journal WHERE state = 'pending' ORDER BY id")


def test_changes_made_while_the_nas_sleeps_reach_it_in_order_after_it_wakes(stack):
    (stack.nas.root / "Docs").mkdir()
    stack.app.refresher.tick(min_age_s=0)  # BaluPi may have listed the root before Docs existed
    assert stack.http.request("PROPFIND", stack.url("/Docs/"), headers={"Depth": "1"}).status_code == 207
    stack.suspend_nas()
    body = b"report v1 " * 5000
    assert stack.http.request("MKCOL", stack.url("/Docs/2026")).status_code == 201
    assert stack.http.put(stack.url("/Docs/2026/report.txt"), data=body).status_code == 201
    assert stack.http.put(stack.url("/Docs/draft.txt"), data=b"draft").status_code == 201
    moved = stack.http.request("MOVE", stack.url("/Docs/draft.txt"), headers={"Destination": stack.url("/Docs/final.txt")})
    assert moved.status_code == 201
    assert [tuple(r) for r in pending(stack)] == [
        ("mkcol", "/Docs/2026"), ("put", "/Docs/2026/report.txt"), ("put", "/Docs/draft.txt"),
        ("move", "/Docs/draft.txt"),
    ]
    assert stack.nas.request_count() == 0

    stack.wake_nas()  # the wake itself starts a sync run; run_once waits for it and applies what is left
    stack.app.sync.run_once()

    assert pending(stack) == []
    assert stack.app.db.query_one("SELECT count(*) FROM journal WHERE state = 'done'")[0] == 4
    assert sha((stack.nas.root / "Docs" / "2026" / "report.txt").read_bytes()) == sha(body)
    assert (stack.nas.root / "Docs" / "final.txt").read_bytes() == b"draft"
    assert not (stack.nas.root / "Docs" / "draft.txt").exists()
    assert not [p for p in (stack.nas.root / "Docs").rglob("*.part")]  # no temp upload left behind
    entry = stack.app.provider.index.get("", "/Docs/2026/report.txt")
    assert not entry.dirty and entry.cached  # a synced file stays cached and becomes clean
    head = stack.http.head(stack.url("/Docs/2026/report.txt"))
    assert head.headers["ETag"].strip('"') == entry.etag  # clients keep the ETag they saw (decision 60)
    assert entry.nas_etag and not entry.nas_etag.startswith("l-")  # the NAS's own is kept beside it


def test_synced_journal_rows_are_purged_after_the_sync_done_retention_days_setting(stack_factory):
    stack = stack_factory(sync_done_retention_days=1)
    for name in ("old.txt", "new.txt"):
        assert stack.http.put(stack.url("/" + name), data=name.encode()).status_code == 201
    stack.app.sync.run_once()
    done = "SELECT path FROM journal WHERE state = 'done' ORDER BY path"
    assert [r[0] for r in stack.app.db.query(done)] == ["/new.txt", "/old.txt"]
    day = 86400
    stack.app.db.raw().execute("UPDATE journal SET done_at = done_at - ? WHERE path = '/old.txt'", (1.5 * day,))
    stack.app.db.raw().execute("UPDATE journal SET done_at = done_at - ? WHERE path = '/new.txt'", (0.5 * day,))
    assert stack.app.sync.purge_done() == 1
    assert [r[0] for r in stack.app.db.query(done)] == ["/new.txt"]


def test_uploads_go_to_a_temporary_name_then_move_into_place(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    assert stack.http.put(stack.url("/photo.jpg"), data=b"\xff\xd8" + b"x" * 100000).status_code == 201
    stack.app.sync.run_once()
    puts = [r for r in stack.nas.requests if r.method == "PUT"]
    moves = [r for r in stack.nas.requests if r.method == "MOVE"]
    assert len(puts) == 1 and puts[0].path.endswith(".part") and "/.balupi-upload-" in puts[0].path
    assert len(moves) == 1 and moves[0].path == puts[0].path
    assert (stack.nas.root / "photo.jpg").stat().st_size == 100002


def test_a_conflict_keeps_both_versions(stack):
    (stack.nas.root / "notes.txt").write_bytes(b"original")
    stack.app.refresher.tick(min_age_s=0)
    assert stack.http.get(stack.url("/notes.txt")).content == b"original"  # cached, based on the NAS version
    stack.suspend_nas()
    assert stack.http.put(stack.url("/notes.txt"), data=b"edited on the Pi").status_code == 204
    (stack.nas.root / "notes.txt").write_bytes(b"edited on the NAS directly, meanwhile")

    stack.wake_nas()
    stack.app.sync.run_once()

    assert pending(stack) == []
    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 1
    assert (stack.nas.root / "notes.txt").read_bytes() == b"edited on the NAS directly, meanwhile"
    copies = [p for p in stack.nas.root.iterdir() if p.name.startswith("notes (conflict ")]
    assert len(copies) == 1 and copies[0].suffix == ".txt"
    assert copies[0].read_bytes() == b"edited on the Pi"
    conflict = stack.app.db.query_one("SELECT path, conflict_path FROM conflicts")
    assert conflict["path"] == "/notes.txt" and conflict["conflict_path"] == "/" + copies[0].name
    # Through BaluPi, the name shows the NAS's version and the copy shows the Pi's.
    assert stack.http.get(stack.url("/notes.txt")).content == b"edited on the NAS directly, meanwhile"
    assert stack.http.get(stack.url("/" + copies[0].name)).content == b"edited on the Pi"


def test_a_dropped_upload_loses_nothing_and_is_retried(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    body = bytes(range(256)) * 4096  # 1 MiB
    assert stack.http.put(stack.url("/big.bin"), data=body).status_code == 201
    stack.nas.faults.drop_put(after_bytes=300_000, count=1)

    first = stack.app.sync.run_once()
    assert first.failed == 1 and first.applied == 0
    assert not (stack.nas.root / "big.bin").exists()  # nothing torn at the final name
    row = stack.app.db.query_one("SELECT attempts, next_at, last_error FROM journal WHERE state = 'pending'")
    assert row["attempts"] == 1 and row["next_at"] > time.time() and row["last_error"]

    stack.app.db.raw().execute("UPDATE journal SET next_at = 0")  # don't wait out the backoff
    second = stack.app.sync.run_once()
    assert second.applied == 1
    assert sha((stack.nas.root / "big.bin").read_bytes()) == sha(body)


def test_deletes_reach_the_nas(stack):
    (stack.nas.root / "old.txt").write_bytes(b"old")
    stack.app.refresher.tick(min_age_s=0)
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    assert stack.http.delete(stack.url("/old.txt")).status_code == 204
    stack.app.sync.run_once()
    assert not (stack.nas.root / "old.txt").exists()


def test_a_sleeping_nas_is_woken_for_old_changes_only_by_policy(stack_factory):
    stack = stack_factory(sync_max_delay_minutes=1)
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/a.txt"), data=b"a").status_code == 201

    assert stack.app.sync.tick() is None  # young change: wait for a natural wake
    assert stack.nas.magic_packet_count == 0

    stack.app.db.raw().execute("UPDATE journal SET at = at - 120")  # now two minutes old
    assert stack.app.sync.tick() is not None  # woke the NAS and ran (the wake's own run may have done the work)
    assert stack.nas.magic_packet_count >= 1
    assert pending(stack) == []
    assert (stack.nas.root / "a.txt").read_bytes() == b"a"


def test_a_file_written_then_renamed_before_its_upload_is_clean_once_both_reached_the_nas(stack):
    stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"})
    stack.suspend_nas()
    assert stack.http.put(stack.url("/draft.txt"), data=b"version one").status_code == 201
    moved = stack.http.request("MOVE", stack.url("/draft.txt"), headers={"Destination": stack.url("/final.txt")})
    assert moved.status_code == 201

    stack.wake_nas()
    stack.app.sync.run_once()

    assert pending(stack) == []
    assert (stack.nas.root / "final.txt").read_bytes() == b"version one"
    entry = stack.app.provider.index.get("", "/final.txt")
    assert not entry.dirty, "stayed dirty: never evictable, and the refresh would ignore NAS changes"
    assert entry.nas_etag and not entry.nas_etag.startswith("l-")
    # A change on the NAS afterwards reaches the client through a refresh.
    (stack.nas.root / "final.txt").write_bytes(b"version two, written on the NAS")
    stack.app.refresher.tick(min_age_s=0)
    assert stack.http.get(stack.url("/final.txt")).content == b"version two, written on the NAS"


def test_a_users_changes_waiting_for_their_login_do_not_hold_up_other_users(stack_factory, tmp_path, running_server):
    from tests.authkit import BOB, BOB_PASSWORD, multi_user_stack, restart

    stack = multi_user_stack(stack_factory, tmp_path)
    bob = (BOB, BOB_PASSWORD)
    assert stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"}, auth=bob).status_code == 207
    stack.suspend_nas()  # bob logged in while the NAS was awake: his offline login works now
    assert stack.http.put(stack.url("/bob-note.txt"), data=b"from bob", auth=bob).status_code == 201
    stack = restart(stack, running_server)  # BaluPi forgets bob's NAS password (memory only)
    assert stack.http.put(stack.url("/alice-note.txt"), data=b"from alice").status_code == 201

    stack.wake_nas()
    stack.app.sync.run_once()

    # alice's later change went through; bob's waits, in order, for his next login.
    assert (stack.nas.root / "alice-note.txt").read_bytes() == b"from alice"
    assert [tuple(r) for r in pending(stack)] == [("put", "/bob-note.txt")]
    assert stack.http.request("PROPFIND", stack.url("/"), headers={"Depth": "1"}, auth=bob).status_code == 207
    stack.app.sync.run_once()
    assert pending(stack) == []
    assert (stack.nas.home_of(BOB) / "bob-note.txt").read_bytes() == b"from bob"


def test_a_listing_between_a_rename_and_its_write_back_keeps_the_new_name(stack_factory):
    """The replay's lost file (issue 13 follow-up): a folder listed from the NAS after a client renamed
    an uncached file in it, before the write-back's MOVE, showed the NAS's state of that moment. The
    new name is missing from it and the old name is still there; a listing must not drop the one nor
    bring back the other while the change is pending, else the renamed file answers 404 until the
    folder is listed again (refresh_min_age_minutes later)."""
    stack = stack_factory(sync_interval_s=3600)  # the write-back runs only when the test says so
    (stack.nas.root / "Films").mkdir()
    (stack.nas.root / "Films" / "holiday.mkv").write_bytes(b"holiday film " * 1000)
    assert stack.http.request("PROPFIND", stack.url("/Films/"), headers={"Depth": "1"}).status_code == 207
    moved = stack.http.request("MOVE", stack.url("/Films/holiday.mkv"),
                               headers={"Destination": stack.url("/Films/holiday-2026.mkv"), "Overwrite": "F"})
    assert moved.status_code == 201
    assert [tuple(r) for r in pending(stack)] == [("move", "/Films/holiday.mkv")]

    stack.app.refresher.tick(min_age_s=0)  # lists /Films while the NAS still has the old name

    assert pending(stack) != []  # the listing came before the write-back
    index = stack.app.provider.index
    assert index.get("", "/Films/holiday-2026.mkv") is not None, "the listing dropped the renamed file"
    assert index.get("", "/Films/holiday.mkv") is None, "the listing brought the old name back"
    stack.app.sync.run_once()
    assert pending(stack) == []
    assert (stack.nas.root / "Films" / "holiday-2026.mkv").exists()
    got = stack.http.get(stack.url("/Films/holiday-2026.mkv"))
    assert got.status_code == 200 and got.content == b"holiday film " * 1000
    assert stack.http.get(stack.url("/Films/holiday.mkv")).status_code == 404
    listing = stack.http.request("PROPFIND", stack.url("/Films/"), headers={"Depth": "1"}).text
    assert "holiday-2026.mkv" in listing and "holiday.mkv<" not in listing and "/holiday.mkv" not in listing


def test_a_listing_asked_before_a_folder_move_reached_the_nas_does_not_undo_it(stack_factory):
    """The same for a renamed folder, and for a listing the NAS answered before the write-back's MOVE
    but merged after it (the refresh's PROPFIND and the write-back run side by side)."""
    stack = stack_factory(sync_interval_s=3600)
    (stack.nas.root / "Music" / "live").mkdir(parents=True)
    (stack.nas.root / "Music" / "live" / "track.mp3").write_bytes(b"track " * 500)
    assert stack.http.request("PROPFIND", stack.url("/Music/live/"), headers={"Depth": "1"}).status_code == 207
    moved = stack.http.request("MOVE", stack.url("/Music/live/"),
                               headers={"Destination": stack.url("/Music/live-2026/"), "Overwrite": "F"})
    assert moved.status_code == 201

    stack.app.refresher.tick(min_age_s=0)  # lists /Music and /Music/live-2026 (the NAS: no such folder yet)
    index = stack.app.provider.index
    assert index.get("", "/Music/live-2026/track.mp3") is not None, "the refresh dropped the moved folder"
    assert index.get("", "/Music/live") is None, "the refresh brought the old folder back"

    asked_at = time.time()
    before_sync = stack.app.provider.client.propfind("/Music", "1", wake=False)  # answered before the MOVE
    stack.app.sync.run_once()
    assert pending(stack) == [] and (stack.nas.root / "Music" / "live-2026" / "track.mp3").exists()
    index.apply_listing("", "/Music", [m for m in before_sync if m.path != "Music"], asked_at)  # merged after it

    assert index.get("", "/Music/live-2026") is not None and index.get("", "/Music/live") is None
    got = stack.http.get(stack.url("/Music/live-2026/track.mp3"))
    assert got.status_code == 200 and got.content == b"track " * 500
    assert stack.http.get(stack.url("/Music/live/track.mp3")).status_code == 404



def test_a_moved_folder_the_nas_lacks_until_the_write_back_is_not_listed_again_at_every_refresh(stack_factory):
    """While the move waits (for the write-back, or for its user's login) the NAS has no folder under
    the new name: the refresh must neither drop it nor ask for it at every tick (each request keeps
    the NAS awake)."""
    stack = stack_factory(sync_interval_s=3600)
    (stack.nas.root / "Photos" / "2025").mkdir(parents=True)
    (stack.nas.root / "Photos" / "2025" / "beach.jpg").write_bytes(b"\xff\xd8 beach")
    assert stack.http.request("PROPFIND", stack.url("/Photos/2025/"), headers={"Depth": "1"}).status_code == 207
    moved = stack.http.request("MOVE", stack.url("/Photos/2025/"),
                               headers={"Destination": stack.url("/Photos/summer-2025/"), "Overwrite": "F"})
    assert moved.status_code == 201
    stack.app.db.raw().execute("UPDATE entries SET listed_at = listed_at - 7200")  # every folder due again
    prefix = DAV_PREFIX + "/Photos/summer-2025"

    listings = []
    for _ in range(3):
        before = stack.nas.request_count("PROPFIND", path_prefix=prefix)
        stack.app.refresher.tick()
        listings.append(stack.nas.request_count("PROPFIND", path_prefix=prefix) - before)

    assert listings == [1, 0, 0], f"PROPFINDs of the moved folder per refresh tick: {listings}"
    assert stack.app.provider.index.get("", "/Photos/summer-2025/beach.jpg") is not None  # not dropped
    stack.app.sync.run_once()
    got = stack.http.get(stack.url("/Photos/summer-2025/beach.jpg"))
    assert got.status_code == 200 and got.content == b"\xff\xd8 beach"
