"""ETags follow content versions, not storage states (issue 12, decision 60).

A file's ETag, `getlastmodified` and `getcontentlength` stay what a client saw across write-back,
refresh, eviction and re-download of the same content, with the NAS awake and asleep; they change
on every content change: a client's write (PUT, LOCK creating a file, COPY onto it) and a newer
version from the NAS (seen by a refresh, or by a download when the index did not know it yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlite_utils

from balupi.cache import schema as dav_schema
from balupi.db import open_database
from balupi import schema as core_schema
from tests.davkit import listing, nas_get, wait_downloads_idle
from tests.stack import stack, stack_factory  # noqa: F401

PROPS = b"""<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:getlastmodified/>
<D:getcontentlength/></D:prop></D:propfind>"""


@dataclass(frozen=True)
class Seen:
    """A file's validators as a client sees them, by HEAD and by PROPFIND (fast lane or WsgiDAV)."""
    etag: str
    last_modified: str
    length: str

    @classmethod
    def of(cls, stack, path: str) -> "Seen":
        head = stack.http.head(stack.url(path))
        assert head.status_code == 200, (path, head.status_code)
        found = stack.http.request("PROPFIND", stack.url(path), headers={"Depth": "0"}, data=PROPS)
        assert found.status_code == 207
        props = listing_props(found.content)
        seen = cls(head.headers["ETag"], head.headers["Last-Modified"], head.headers["Content-Length"])
        assert (props["getetag"], props["getlastmodified"], props["getcontentlength"]) == \
            (seen.etag, seen.last_modified, seen.length), "HEAD and PROPFIND disagree"
        return seen


def listing_props(body: bytes) -> dict:
    from tests.davkit import parse_multistatus

    (member,) = parse_multistatus(body).values()
    return member.props


def entry(stack, path: str):
    return stack.app.provider.index.get("", path)


def write_back(stack, path: str = "/notes.txt") -> None:
    stack.app.sync.run_once()
    assert stack.app.sync.pending()["count"] == 0
    assert not entry(stack, path).dirty


def evict_all(stack) -> None:
    stack.app.provider.cache.evict_to(0)
    assert not entry(stack, "/notes.txt").cached


def refetch(stack, path: str, body: bytes) -> str:
    """GET a file that is not cached: the miss's answer, then the cached copy. Returns the miss's ETag."""
    miss = stack.http.get(stack.url(path))
    assert miss.status_code == 200 and miss.content == body
    wait_downloads_idle(stack.app)
    assert entry(stack, path).cached
    return miss.headers["ETag"]


@pytest.mark.parametrize("nas", ["awake", "asleep"])
def test_a_files_etag_survives_write_back_refresh_and_eviction(stack, nas):
    listing(stack, "/")
    if nas == "asleep":
        stack.suspend_nas()
    body = b"version one\n" * 1000
    assert stack.http.put(stack.url("/notes.txt"), data=body).status_code == 201
    seen = Seen.of(stack, "/notes.txt")
    assert seen.length == str(len(body))

    if nas == "asleep":
        assert Seen.of(stack, "/notes.txt") == seen  # nothing happens while it sleeps
        stack.wake_nas()
    write_back(stack)
    assert (stack.nas.root / "notes.txt").read_bytes() == body
    nas_etag = nas_get(stack, "/notes.txt", "HEAD").headers["ETag"]
    assert nas_etag != seen.etag  # the NAS names it differently; BaluPi keeps both apart
    assert Seen.of(stack, "/notes.txt") == seen, "write-back changed what the client sees"

    stack.app.refresher.tick(min_age_s=0)
    assert Seen.of(stack, "/notes.txt") == seen, "a refresh changed what the client sees"
    assert entry(stack, "/notes.txt").cached  # and kept the content

    evict_all(stack)
    assert Seen.of(stack, "/notes.txt") == seen, "eviction changed what the client sees"
    assert refetch(stack, "/notes.txt", body) == seen.etag, "the miss answered another ETag"
    assert Seen.of(stack, "/notes.txt") == seen, "a re-download changed what the client sees"

    stack.app.refresher.tick(min_age_s=0)
    write_back(stack)
    assert Seen.of(stack, "/notes.txt") == seen


def test_every_content_change_is_a_new_etag(stack):
    listing(stack, "/")
    seen: list[Seen] = []

    def changed(note: str) -> None:
        now = Seen.of(stack, "/notes.txt")
        assert now.etag not in [s.etag for s in seen], f"{note}: the ETag did not change"
        seen.append(now)

    locked = stack.http.request("LOCK", stack.url("/notes.txt"), data=LOCK_BODY)
    assert locked.status_code == 201  # an empty file
    token = locked.headers["Lock-Token"].strip("<>")
    changed("LOCK created the file")
    write_back(stack)
    lock_if = {"If": f"(<{token}>)"}
    assert stack.http.put(stack.url("/notes.txt"), data=b"one", headers=lock_if).status_code == 204
    changed("a PUT")
    assert stack.http.put(stack.url("/notes.txt"), data=b"one", headers=lock_if).status_code == 204
    changed("a PUT of the same bytes (a write all the same)")
    assert stack.http.request("UNLOCK", stack.url("/notes.txt"), headers={"Lock-Token": f"<{token}>"}).status_code == 204
    write_back(stack)
    assert Seen.of(stack, "/notes.txt") == seen[-1]

    assert stack.http.put(stack.url("/other.txt"), data=b"the other file").status_code == 201
    copied = stack.http.request("COPY", stack.url("/other.txt"),
                                headers={"Destination": stack.url("/notes.txt"), "Overwrite": "T"})
    assert copied.status_code == 204
    changed("a COPY onto it")
    write_back(stack)

    (stack.nas.root / "notes.txt").write_bytes(b"edited on the NAS, longer than before")
    stack.app.refresher.tick(min_age_s=0)
    changed("a newer version on the NAS, seen by a refresh")
    assert Seen.of(stack, "/notes.txt").length == str(len(b"edited on the NAS, longer than before"))

    # A newer version the index has not seen yet, met by a download: the answer and the index
    # both carry the new version's ETag.
    refetch(stack, "/notes.txt", b"edited on the NAS, longer than before")
    evict_all(stack)
    (stack.nas.root / "notes.txt").write_bytes(b"edited again on the NAS")
    miss_etag = refetch(stack, "/notes.txt", b"edited again on the NAS")
    changed("a newer version on the NAS, met by a download")
    assert miss_etag == seen[-1].etag

    (stack.nas.root / "notes.txt").write_bytes(b"and again")
    stack.app.refresher.tick(min_age_s=0)
    changed("a third version on the NAS")


LOCK_BODY = b"""<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>
</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"""


def test_davfs2s_delayed_put_after_a_write_back_is_not_refused(stack):
    """The issue's wire sequence: LOCK creates an empty file, HEAD reads its ETag, write-back syncs
    the empty file, then the PUT with If-Match (davfs2's delay_upload) must succeed."""
    listing(stack, "/")
    locked = stack.http.request("LOCK", stack.url("/copied.txt"), data=LOCK_BODY, headers={"Timeout": "Second-600"})
    assert locked.status_code == 201
    token = locked.headers["Lock-Token"].strip("<>")
    etag = stack.http.head(stack.url("/copied.txt")).headers["ETag"]
    write_back(stack, "/copied.txt")
    assert (stack.nas.root / "copied.txt").read_bytes() == b""
    put = stack.http.put(stack.url("/copied.txt"), data=b"the content" * 100,
                         headers={"If-Match": etag, "If": f"(<{token}>)"})
    assert put.status_code == 204, put.text
    write_back(stack, "/copied.txt")
    assert (stack.nas.root / "copied.txt").read_bytes() == b"the content" * 100


def test_a_file_written_then_deleted_before_its_upload_is_deleted_on_the_nas(stack):
    """The delete's base is the NAS's version once the upload before it reached the NAS, not the
    client's ETag: else the delete would take our own upload for someone else's change."""
    listing(stack, "/")
    assert stack.http.put(stack.url("/keep.txt"), data=b"v1").status_code == 201
    stack.app.sync.run_once()
    stack.suspend_nas()
    assert stack.http.put(stack.url("/keep.txt"), data=b"v2").status_code == 204
    assert stack.http.delete(stack.url("/keep.txt")).status_code == 204
    stack.wake_nas()
    stack.app.sync.run_once()
    assert stack.app.sync.pending()["count"] == 0
    assert not (stack.nas.root / "keep.txt").exists()
    assert stack.app.db.query_one("SELECT count(*) FROM conflicts")[0] == 0


def test_an_index_from_before_nas_etags_is_upgraded_without_changing_a_clients_etag(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    core_schema.migrations.apply(old)
    dav_schema.migrations.apply(old, stop_before="0005_nas_etag")
    rows = [  # (path, dirty, remote, etag, base_etag)
        ("/synced.txt", 0, 1, "nas-1", None),  # clean: its etag was the NAS's
        ("/local.txt", 1, 0, "l-abc", None),  # never synced
        ("/edited.txt", 1, 1, "l-def", "nas-2"),  # edited on the Pi, based on NAS version nas-2
        ("/moved.txt", 0, 1, "l-123", None),  # clean after a synced move; the NAS's ETag comes with a listing
    ]
    for p, dirty, remote, etag, base in rows:
        old.execute("INSERT INTO entries (view, path, parent, name, is_dir, size, mtime, ctime, etag, dirty, remote,"
                    " base_etag) VALUES ('', ?, '/', ?, 0, 1, 0, 0, ?, ?, ?, ?)", (p, p[1:], etag, dirty, remote, base))
    old.conn.commit()
    old.close()

    db = open_database(path)
    got = {r[0]: (r[1], r[2]) for r in db.query("SELECT path, etag, nas_etag FROM entries")}
    assert got == {"/synced.txt": ("nas-1", "nas-1"), "/local.txt": ("l-abc", None),
                   "/edited.txt": ("l-def", "nas-2"), "/moved.txt": ("l-123", None)}
    db.close()
