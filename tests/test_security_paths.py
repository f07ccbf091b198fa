"""Issue 6, point 6: nothing is ever read or written outside the cache and data directories. Request
paths never name files (content lives under random keys), and what is placed inside the cache
directory is never followed: a content file swapped for a symbolic or hard link to a file outside,
a content directory swapped for a link, a FIFO, links where `data/` or `tmp/` belong. (The corpus
of hostile request paths is in tests/test_security_suite.py.)
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from balupi.dav.guard import destination_problem, path_problem, wsgi_path_problem
from balupi.cache.store import ContentStore
from balupi.errors import ConfigError
from tests.davkit import index_row, stack_with, wait_downloads_idle
from tests.stack import stack_factory  # noqa: F401

SECRET = b"outside secret, never to be served\n"
DOC = b"the document as the NAS has it"


@pytest.fixture
def outside(tmp_path):
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_bytes(SECRET)
    return directory


@pytest.fixture
def cached(stack_factory, tmp_path):
    """/docs/a.txt cached; returns (stack, its content file)."""
    stack = stack_with(stack_factory, tmp_path, {"/docs/a.txt": DOC})
    assert stack.http.get(stack.url("/docs/a.txt")).content == DOC
    wait_downloads_idle(stack.app)
    key = index_row(stack.app, "/docs/a.txt")["cache_key"]
    return stack, stack.app.provider.store.path_of(key)


# -- the rules for names -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/a/../b", "/..", "/a/./b", "/a\\b", "/a\x00b", "/a\nb", "/\uff0e\uff0e/x",
                                  "/\u2024\u2024/x", "/a\uff0fb", "/%2e%2e/x", "/a%2Fb", "/a%5cb", "/a%00"])
def test_names_that_could_climb_or_split_are_refused(path):
    assert path_problem(path) is not None


@pytest.mark.parametrize("path", ["/", "/docs/a.txt", "/Grüße.txt", "/100% sure.txt", "/%41 not A.txt",
                                  "/日本語 ファイル.txt", "/...", "/..hidden", "/a..b", "/#hash#.txt", "/½.txt"])
def test_ordinary_strange_names_are_allowed(path):
    assert path_problem(path) is None


def test_invalid_and_overlong_utf8_is_refused():
    assert wsgi_path_problem(b"/\xc0\xae\xc0\xae/x".decode("latin-1")) is not None
    assert wsgi_path_problem(b"/\xed\xa0\x80".decode("latin-1")) is not None  # a surrogate
    assert wsgi_path_problem("/Grüße".encode().decode("latin-1")) is None


def test_a_destination_must_stay_in_the_share():
    assert destination_problem("http://h/dav/docs/b.txt", "/dav") is None
    for bad in ("http://h/dav/../x", "file:///etc/passwd", "http://h/api/x", "http://h/davx/y", "/dav/%c0%ae/x"):
        assert destination_problem(bad, "/dav") is not None, bad


# -- what is placed in the cache -----------------------------------------------------------------


def test_a_content_file_swapped_for_a_symlink_to_outside_is_never_followed(cached, outside):
    stack, content = cached
    content.unlink()
    content.symlink_to(outside / "secret.txt")

    response = stack.http.get(stack.url("/docs/a.txt"))

    assert response.status_code == 200 and response.content == DOC  # fetched again from the NAS
    assert (outside / "secret.txt").read_bytes() == SECRET
    wait_downloads_idle(stack.app)


def test_a_content_file_swapped_for_a_symlink_is_not_served_while_the_nas_sleeps(cached, outside):
    stack, content = cached
    stack.suspend_nas()
    content.unlink()
    content.symlink_to(outside / "secret.txt")

    response = stack.http.get(stack.url("/docs/a.txt"))
    ranged = stack.http.get(stack.url("/docs/a.txt"), headers={"Range": "bytes=0-5,10-15"})

    assert SECRET[:6] not in response.content and SECRET[:6] not in ranged.content
    assert response.status_code != 200 or response.content == DOC


def test_a_hard_link_to_a_file_outside_is_not_served(cached, outside):
    stack, content = cached
    stack.suspend_nas()
    content.unlink()
    os.link(outside / "secret.txt", content)

    response = stack.http.get(stack.url("/docs/a.txt"))

    assert SECRET not in response.content
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_a_fifo_in_place_of_content_neither_hangs_nor_is_read(cached):
    stack, content = cached
    stack.suspend_nas()
    content.unlink()
    os.mkfifo(content)
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=stack.http.get(stack.url("/docs/a.txt"), timeout=30)))
    worker.start()
    worker.join(40)
    assert not worker.is_alive()
    assert result["r"].status_code != 200 or result["r"].content == DOC  # missing: fetched again (the NAS woken)


def test_a_content_directory_swapped_for_a_symlink_is_neither_read_nor_written_through(cached, outside):
    stack, content = cached
    stack.suspend_nas()
    key = content.name
    real = content.parent
    shutil.move(str(real), str(real.parent.parent / "moved-away"))
    (outside / key).write_bytes(SECRET)
    real.symlink_to(outside, target_is_directory=True)

    response = stack.http.get(stack.url("/docs/a.txt"))
    deleted = stack.http.delete(stack.url("/docs/a.txt"))

    assert SECRET not in response.content
    assert deleted.status_code == 204
    assert (outside / key).read_bytes() == SECRET and (outside / "secret.txt").read_bytes() == SECRET


def test_publishing_into_a_symlinked_content_directory_replaces_the_link(tmp_path, outside):
    store = ContentStore(tmp_path / "cache")
    key, tmp, f = store.open_temp()
    with f:
        f.write(b"new content")
    sub = store.data_dir / key[:2]
    sub.symlink_to(outside, target_is_directory=True)

    store.publish(key, tmp)

    assert not sub.is_symlink() and (sub / key).read_bytes() == b"new content"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    with store.open_read(key) as got:
        assert got.read() == b"new content"
    store.close()


def test_removing_content_never_removes_a_link_target(tmp_path, outside):
    store = ContentStore(tmp_path / "cache")
    key = store.new_key()
    (store.data_dir / key[:2]).mkdir()
    (store.data_dir / key[:2] / key).symlink_to(outside / "secret.txt")

    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.open_content(key)
    assert store.remove(key) == 0
    assert (outside / "secret.txt").read_bytes() == SECRET
    store.close()


@pytest.mark.parametrize("which", ["data", "tmp"])
def test_a_cache_whose_data_or_tmp_is_a_symlink_does_not_start(settings_factory, running_server, tmp_path, outside,
                                                              which):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / which).symlink_to(outside, target_is_directory=True)

    with pytest.raises(ConfigError, match="symbolic link"):
        running_server(settings_factory(cache_dir=cache))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_link_left_in_tmp_is_removed_at_start_not_its_target(tmp_path, outside):
    tmp = tmp_path / "cache" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "0123.part").symlink_to(outside / "secret.txt")

    store = ContentStore(tmp_path / "cache")
    assert store.clear_temp() == 1

    assert list(tmp.iterdir()) == [] and (outside / "secret.txt").read_bytes() == SECRET
    store.close()


def test_the_listing_and_its_assets_still_load_but_the_assets_are_read_only(cached):
    stack, _ = cached
    assert stack.http.get(stack.url("/docs/"), headers={"Accept": "text/html"}).status_code == 200
    assert stack.http.get(stack.url("/:dir_browser/style.css")).status_code == 200
    assert stack.http.put(stack.url("/:dir_browser/style.css"), data=b"x").status_code == 403
    moved = stack.http.request("MOVE", stack.url("/docs/a.txt"), headers={"Destination": stack.url("/:dir_browser/a.txt")})
    assert moved.status_code == 403
