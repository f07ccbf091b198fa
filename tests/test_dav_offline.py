"""Issue 4, behaviours 1 and 6: the offline namespace and client noise.

After one walk with the NAS awake (PROPFIND Depth 1 on every collection, GET of every file), the
whole tree and its cached content are served from the index and the SSD: with the NAS suspended,
PROPFIND (Depth 0 and 1), HEAD, OPTIONS and GET cause no NAS request and no magic packet. Client
noise (Finder's `._*`, `.DS_Store`, ...; Windows' `desktop.ini`, `Thumbs.db`, ...) never reaches the
NAS, even under collections the index has never listed, and files written under such names stay on
the Pi (no journal entry).
"""

from __future__ import annotations

import pytest

from balupi.nas.monitor import NasState
from tests.davkit import (
    awake_walk,
    index_row,
    journal,
    listing,
    parse_multistatus,
    propfind,
    sample_tree,
    stack_with,
    url_path,
)
from tests.stack import stack_factory  # noqa: F401

NAMED_PROPS = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><D:quota-used-bytes/>"
    b"</D:prop></D:propfind>"
)
FINDER_NOISE = ("._a.txt", ".DS_Store", ".localized", ".metadata_never_index", ".ql_disablethumbnails", "._")
WINDOWS_NOISE = ("desktop.ini", "Thumbs.db", "AutoRun.inf", "DESKTOP.INI", "thumbs.db")
NOISE = FINDER_NOISE + WINDOWS_NOISE


TREE = sample_tree()


@pytest.fixture
def stack(stack_factory, tmp_path):
    return stack_with(stack_factory, tmp_path, TREE)


def assert_no_nas_traffic(stack) -> None:
    requests_seen = [(r.method, r.path) for r in stack.nas.requests]
    assert requests_seen == []
    assert stack.nas.magic_packet_count == 0
    assert stack.app.nas.state is NasState.ASLEEP


def test_walk_of_cached_content_with_the_nas_asleep_causes_no_nas_request_and_no_magic_packet(stack):
    collections, files = awake_walk(stack)
    assert sorted(files) == sorted(TREE)
    awake_listings = {path: listing(stack, path) for path in collections}
    stack.suspend_nas()

    for path in collections:
        depth0 = listing(stack, path, "0")
        assert list(depth0) == [path] and depth0[path].is_dir
        depth1 = listing(stack, path, "1")
        assert depth1.keys() == awake_listings[path].keys()
        for member_path, member in depth1.items():
            assert member.props.get("getetag") == awake_listings[path][member_path].props.get("getetag")
            assert member.props.get("getcontentlength") == awake_listings[path][member_path].props.get("getcontentlength")
        named = propfind(stack, path, "1", NAMED_PROPS)
        assert named.status_code == 207
        named_members = parse_multistatus(named.content)
        assert named_members.keys() == depth1.keys()
        options = stack.http.options(stack.url(url_path(path)))
        assert options.status_code == 200 and "PROPFIND" in options.headers["Allow"]

    for path, content in TREE.items():
        member = listing(stack, path, "0")[path]
        assert not member.is_dir and member.props["getcontentlength"] == str(len(content))
        head = stack.http.head(stack.url(url_path(path)))
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(content))
        assert head.headers["ETag"] == member.props["getetag"]
        options = stack.http.options(stack.url(url_path(path)))
        assert options.status_code == 200
        get = stack.http.get(stack.url(url_path(path)))
        assert get.status_code == 200
        assert get.content == content

    assert_no_nas_traffic(stack)


def test_unknown_names_under_listed_collections_are_404_without_the_nas(stack):
    awake_walk(stack, get_files=False)
    stack.suspend_nas()

    for path in ("/nope.txt", "/docs/nope.txt", "/docs/deep/deeper/nothing", "/nope/below/it.txt",
                 "/photos/2024/p3.jpg", "/photos/empty-album/x"):
        assert stack.http.get(stack.url(path)).status_code == 404, path
        assert stack.http.head(stack.url(path)).status_code == 404, path
        assert propfind(stack, path, "0").status_code == 404, path
        assert propfind(stack, path, "1").status_code == 404, path

    assert_no_nas_traffic(stack)


def test_client_noise_is_answered_without_the_nas_even_under_unlisted_collections(stack):
    listing(stack, "/")  # the root is listed; /docs and /photos are known, their members are not
    stack.suspend_nas()
    # (The namespace refresh may have listed some meanwhile; it cannot now, with the NAS asleep.)
    unlisted = [p for p in ("/docs", "/photos", "/photos/2024")
                if index_row(stack.app, p) is None or not index_row(stack.app, p)["listed"]]
    assert unlisted

    parents = ("/", *unlisted, "/never/seen")
    for parent in parents:
        for name in NOISE:
            path = parent.rstrip("/") + "/" + name
            assert stack.http.get(stack.url(url_path(path))).status_code == 404, path
            assert stack.http.head(stack.url(url_path(path))).status_code == 404, path
            assert propfind(stack, path, "0").status_code == 404, path

    assert_no_nas_traffic(stack)


def test_files_created_under_noise_names_stay_on_the_pi(stack):
    listing(stack, "/")
    stack.suspend_nas()
    journal_before = journal(stack.app)

    written = {}
    for parent in ("/", "/docs", "/photos"):  # /docs and /photos have never been listed
        for name in NOISE[:-2]:  # the last two are other spellings of names already written
            path = parent.rstrip("/") + "/" + name
            content = f"noise at {path}".encode()
            response = stack.http.put(stack.url(url_path(path)), data=content)
            assert response.status_code == 201, (path, response.status_code, response.text[:200])
            written[path] = content
    mkcol = stack.http.request("MKCOL", stack.url("/docs/.Trashes"))
    assert mkcol.status_code == 201

    for path, content in written.items():
        get = stack.http.get(stack.url(url_path(path)))
        assert get.status_code == 200 and get.content == content, path
        row = index_row(stack.app, path)
        assert row["local_only"] == 1 and row["dirty"] == 0, path
    assert index_row(stack.app, "/docs/.Trashes")["local_only"] == 1
    assert journal(stack.app) == journal_before  # nothing to tell the NAS
    assert not (stack.nas.root / "docs" / ".DS_Store").exists()
    assert_no_nas_traffic(stack)


def test_the_noise_list_is_configurable(stack_factory, tmp_path):
    stack = stack_with(stack_factory, tmp_path, {"/notes/a.txt": b"a"}, dav_local_only_names=["*.swp", "scratch-*"])
    listing(stack, "/")
    stack.suspend_nas()

    for path in ("/notes/.a.txt.swp", "/notes/scratch-1", "/x/y/SCRATCH-2"):
        assert stack.http.get(stack.url(path)).status_code == 404
    assert stack.http.put(stack.url("/notes/b.swp"), data=b"swap").status_code == 201
    assert index_row(stack.app, "/notes/b.swp")["local_only"] == 1
    assert journal(stack.app) == []
    assert stack.nas.request_count() == 0 and stack.nas.magic_packet_count == 0
    # `.DS_Store` is no longer in the list: it is an ordinary name, so it may need the NAS.
    assert not stack.app.provider.is_noise(".DS_Store")
