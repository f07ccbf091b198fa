"""Issue 4, behaviour 2: a cache hit is served from the SSD like a good static file server.

`Content-Length`, `Accept-Ranges`, `Last-Modified` and a strong ETag that is the NAS's ETag for the
file (so it is the same after a BaluPi restart and after the file is downloaded again); single
ranges (206), unsatisfiable ranges (416), several ranges as multipart/byteranges; the conditionals
If-Match, If-None-Match, If-Range, If-Modified-Since and If-Unmodified-Since; and DAVx5's way of
reading a document (HEAD, then 2 MiB ranged GETs with If-Match), which must get 206 every time.

Unless a test says otherwise, the content is cached first and the NAS is then suspended, so every
answer is a hit, and each test ends by checking the NAS saw nothing.
"""

from __future__ import annotations

import os
import re
from email.utils import formatdate, parsedate_to_datetime

import pytest

from tests.davkit import awake_walk, index_row, nas_get, stack_with, wait_downloads_idle
from tests.stack import Stack, stack_factory  # noqa: F401

SIZE = 100_000
CONTENT = os.urandom(SIZE)
PATH = "/music/track.flac"
MIB = 1 << 20
DOC_SIZE = 5 * MIB + 12345  # DAVx5: 2 MiB, 2 MiB, the rest
DOC = os.urandom(DOC_SIZE)
DOC_PATH = "/docs/report.odt"


@pytest.fixture
def stack(stack_factory, tmp_path):
    return stack_with(stack_factory, tmp_path, {PATH: CONTENT, DOC_PATH: DOC})


@pytest.fixture
def hit(stack):
    """The stack with PATH and DOC_PATH cached and the NAS asleep; yields the NAS's answer to HEAD PATH."""
    nas_head = nas_get(stack, PATH, "HEAD")
    awake_walk(stack)
    assert index_row(stack.app, PATH)["cache_key"] is not None
    stack.suspend_nas()
    yield nas_head
    assert stack.nas.request_count() == 0
    assert stack.nas.magic_packet_count == 0


def get(stack, path=PATH, **headers):
    return stack.http.get(stack.url(path), headers=headers)


def strong_etag(response) -> str:
    etag = response.headers["ETag"]
    assert re.fullmatch(r'"[^"]+"', etag), f"not a strong ETag: {etag}"
    return etag


def parse_byteranges(response) -> list[tuple[str, bytes]]:
    """The parts of a multipart/byteranges body as (Content-Range, bytes)."""
    match = re.fullmatch(r"multipart/byteranges;\s*boundary=(\S+)", response.headers["Content-Type"])
    assert match, response.headers["Content-Type"]
    delimiter = b"--" + match.group(1).strip('"').encode()
    body = response.content
    assert body.rstrip(b"\r\n").endswith(delimiter + b"--")
    parts = []
    for chunk in body.split(delimiter)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, data = chunk[2:-2].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((headers["Content-Range"], data))
    return parts


def test_hit_has_length_ranges_last_modified_and_the_nas_strong_etag(stack, hit):
    response = get(stack)
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert parsedate_to_datetime(response.headers["Last-Modified"]) == parsedate_to_datetime(hit.headers["Last-Modified"])
    assert strong_etag(response) == hit.headers["ETag"]
    head = stack.http.head(stack.url(PATH))
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(SIZE)
    assert head.headers["ETag"] == hit.headers["ETag"]
    assert head.content == b""


def test_etag_is_unchanged_after_a_restart(stack, hit, running_server):
    before = get(stack)
    stack.server.stop()
    restarted = Stack(stack.nas, running_server(stack.app.settings), stack.http)

    after = get(restarted)

    assert after.status_code == 200 and after.content == CONTENT
    assert after.headers["ETag"] == before.headers["ETag"] == hit.headers["ETag"]
    assert after.headers["Last-Modified"] == before.headers["Last-Modified"]


def test_etag_is_unchanged_after_the_file_is_downloaded_again(stack, hit):
    before = get(stack)
    stack.nas.wake_now()
    # Drop the cached copy (as eviction would): the next GET downloads it again from the NAS.
    key = index_row(stack.app, PATH)["cache_key"]
    with stack.app.db.write() as d:
        d.execute("UPDATE entries SET cache_key = NULL WHERE path = ?", (PATH,))
    stack.app.provider.store.remove(key)

    again = get(stack)
    wait_downloads_idle(stack.app)

    assert again.status_code == 200 and again.content == CONTENT
    assert stack.nas.request_count("GET", "/dav" + PATH) == 1  # it really was downloaded again
    new_key = index_row(stack.app, PATH)["cache_key"]
    assert new_key is not None and new_key != key
    assert again.headers["ETag"] == before.headers["ETag"] == hit.headers["ETag"]
    from_cache = get(stack)
    assert from_cache.headers["ETag"] == hit.headers["ETag"]
    stack.suspend_nas()  # the fixture's check of no NAS traffic starts from here


def test_single_range_is_206_with_the_right_bytes(stack, hit):
    for header, (start, end) in {
        "bytes=0-9": (0, 9),
        "bytes=1000-1999": (1000, 1999),
        "bytes=99990-": (99990, SIZE - 1),
        "bytes=-500": (SIZE - 500, SIZE - 1),
        "bytes=99000-200000": (99000, SIZE - 1),  # end past the size is cut to the size
    }.items():
        response = get(stack, Range=header)
        assert response.status_code == 206, header
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}", header
        assert response.headers["Content-Length"] == str(end - start + 1), header
        assert response.content == CONTENT[start:end + 1], header


def test_unsatisfiable_range_is_416_with_the_size(stack, hit):
    for header in (f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}"):
        response = get(stack, Range=header)
        assert response.status_code == 416, header
        assert response.headers["Content-Range"] == f"bytes */{SIZE}", header


def test_several_ranges_are_multipart_byteranges_with_every_part_right(stack, hit):
    response = get(stack, Range="bytes=0-9,20-29")
    assert response.status_code == 206
    assert parse_byteranges(response) == [
        (f"bytes 0-9/{SIZE}", CONTENT[0:10]),
        (f"bytes 20-29/{SIZE}", CONTENT[20:30]),
    ]
    assert int(response.headers["Content-Length"]) == len(response.content)

    response = get(stack, Range="bytes=500-599,-100,50000-50010")
    assert parse_byteranges(response) == [
        (f"bytes 500-599/{SIZE}", CONTENT[500:600]),
        (f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}", CONTENT[-100:]),
        (f"bytes 50000-50010/{SIZE}", CONTENT[50000:50011]),
    ]


def test_if_match_and_if_none_match(stack, hit):
    etag = hit.headers["ETag"]
    assert get(stack, **{"If-Match": etag}).status_code == 200
    assert get(stack, **{"If-Match": f'"other", {etag}'}).status_code == 200
    assert get(stack, **{"If-Match": "*"}).status_code == 200
    assert get(stack, **{"If-Match": '"not-the-etag"'}).status_code == 412

    not_modified = get(stack, **{"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    assert get(stack, **{"If-None-Match": '"not-the-etag"'}).status_code == 200
    head = stack.http.head(stack.url(PATH), headers={"If-None-Match": etag})
    assert head.status_code == 304


def test_if_range_gives_the_range_on_a_match_and_the_whole_file_otherwise(stack, hit):
    etag = hit.headers["ETag"]
    last_modified = hit.headers["Last-Modified"]
    matching = get(stack, Range="bytes=10-19", **{"If-Range": etag})
    assert matching.status_code == 206 and matching.content == CONTENT[10:20]
    by_date = get(stack, Range="bytes=10-19", **{"If-Range": last_modified})
    assert by_date.status_code == 206 and by_date.content == CONTENT[10:20]

    stale = get(stack, Range="bytes=10-19", **{"If-Range": '"an-old-etag"'})
    assert stale.status_code == 200 and stale.content == CONTENT
    old_date = formatdate(parsedate_to_datetime(last_modified).timestamp() - 3600, usegmt=True)
    stale_date = get(stack, Range="bytes=10-19", **{"If-Range": old_date})
    assert stale_date.status_code == 200 and stale_date.content == CONTENT


def test_if_modified_since_and_if_unmodified_since(stack, hit):
    last_modified = hit.headers["Last-Modified"]
    mtime = parsedate_to_datetime(last_modified).timestamp()
    earlier = formatdate(mtime - 3600, usegmt=True)
    later = formatdate(mtime + 3600, usegmt=True)

    assert get(stack, **{"If-Modified-Since": last_modified}).status_code == 304
    assert get(stack, **{"If-Modified-Since": later}).status_code == 304
    modified = get(stack, **{"If-Modified-Since": earlier})
    assert modified.status_code == 200 and modified.content == CONTENT

    assert get(stack, **{"If-Unmodified-Since": earlier}).status_code == 412
    assert get(stack, **{"If-Unmodified-Since": last_modified}).status_code == 200
    assert get(stack, **{"If-Unmodified-Since": later}).status_code == 200


def davx5_read(stack, path: str, content: bytes) -> None:
    """DAVx5: HEAD, then 2 MiB ranged GETs with If-Match; anything but 206 means no random access."""
    head = stack.http.head(stack.url(path))
    assert head.status_code == 200
    assert head.headers["Accept-Ranges"] == "bytes"
    size = int(head.headers["Content-Length"])
    assert size == len(content)
    etag = strong_etag(head)
    start = 0
    while start < size:
        end = min(start + 2 * MIB, size) - 1
        response = get(stack, path, Range=f"bytes={start}-{end}", **{"If-Match": etag})
        assert response.status_code == 206, (start, response.status_code)
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert response.content == content[start:end + 1], start
        start = end + 1


def test_davx5_reads_a_cached_document_with_the_nas_asleep(stack, hit):
    davx5_read(stack, DOC_PATH, DOC)


def test_davx5_reads_an_uncached_document_with_the_nas_awake(stack):
    awake_walk(stack, get_files=False)
    assert index_row(stack.app, DOC_PATH)["cache_key"] is None

    davx5_read(stack, DOC_PATH, DOC)

    wait_downloads_idle(stack.app)
    davx5_read(stack, DOC_PATH, DOC)  # and again, whatever the cache holds by now
