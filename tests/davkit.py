"""Helpers for the WebDAV tests against the whole stack (tests/stack.py): seeding the simulated NAS,
PROPFIND parsing, the awake walk that fills the index and the cache, and waiting for downloads.

Not fixtures: plain functions the test_dav_* and test_nas_wake files share.

`stack_with` puts the files on the NAS before BaluPi starts (as in life: BaluPi's namespace refresh
lists the NAS as soon as it is awake, so files added after that would only show at a later refresh)
and switches prefetch and the walk after a wake off: these tests are about what clients cause (a
miss must stay a miss, an unlisted folder stays unlisted, a walk decides what is cached), and a
prefetch still running when a test suspends the NAS would race with it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

DAV = "{DAV:}"


def seed(root: Path, files: dict[str, bytes]) -> None:
    """Write `files` ({"/dir/name": content}) under the NAS's storage root."""
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


CLIENT_DRIVEN = {"prefetch_budget_mb": 0, "refresh_walk_budget_s": 0}


def stack_with(stack_factory, tmp_path: Path, files: dict[str, bytes], **overrides):
    """A stack whose NAS holds `files` before BaluPi first looks at it; prefetch off (see above)."""
    seed(tmp_path / "nas", files)
    stack = stack_factory(**{**CLIENT_DRIVEN, **overrides})
    assert stack.nas.root == (tmp_path / "nas").resolve()  # where tests/stack.py keeps it
    return stack


def sample_tree() -> dict[str, bytes]:
    """A small tree with nested collections, an empty file and a few MiB in total."""
    return {
        "/readme.md": b"# hello\n" * 10,
        "/empty.txt": b"",
        "/docs/a.txt": b"alpha " * 1000,
        "/docs/b.pdf": os.urandom(200_000),
        "/docs/deep/deeper/c.bin": os.urandom(1_500_000),
        "/photos/p1.jpg": os.urandom(300_000),
        "/photos/2024/p2.jpg": os.urandom(50_000),
        "/photos/empty-album/.keep": b"",
    }


def href_path(href: str) -> str:
    """The decoded path below /dav of a multistatus href ("/" for the root, no trailing slash)."""
    path = unquote(urlsplit(href).path)
    assert path.startswith("/dav"), href
    return path[len("/dav"):].rstrip("/") or "/"


@dataclass
class Member:
    path: str
    is_dir: bool
    props: dict[str, str | None]  # 200 props (local name in DAV:, Clark notation otherwise) -> text
    missing: dict[str, int]  # props answered with another status -> that status


def parse_multistatus(body: bytes) -> dict[str, Member]:
    root = ElementTree.fromstring(body)
    assert root.tag == DAV + "multistatus"
    members = {}
    for response in root.findall(DAV + "response"):
        path = href_path(response.findtext(DAV + "href") or "")
        props: dict[str, str | None] = {}
        missing: dict[str, int] = {}
        is_dir = False
        for propstat in response.findall(DAV + "propstat"):
            status = int((propstat.findtext(DAV + "status") or "HTTP/1.1 0").split()[1])
            for prop in propstat.find(DAV + "prop"):
                name = prop.tag[len(DAV):] if prop.tag.startswith(DAV) else prop.tag
                if status == 200:
                    props[name] = prop.text
                    if name == "resourcetype" and prop.find(DAV + "collection") is not None:
                        is_dir = True
                else:
                    missing[name] = status
        members[path] = Member(path, is_dir, props, missing)
    return members


def url_path(path: str) -> str:
    """Percent-encode a decoded path for a request URL."""
    return quote(path, safe="/")


def propfind(stack, path: str, depth: str = "1", body: bytes | None = None):
    return stack.http.request("PROPFIND", stack.url(url_path(path)), headers={"Depth": depth}, data=body)


def listing(stack, path: str, depth: str = "1") -> dict[str, Member]:
    response = propfind(stack, path, depth)
    assert response.status_code == 207, (path, response.status_code, response.text[:300])
    return parse_multistatus(response.content)


def wait_downloads_idle(app, timeout_s: float = 30.0) -> None:
    """Wait until no download runs (a GET's body can end just before its entry is published)."""
    deadline = time.monotonic() + timeout_s
    while app.provider.downloads.count():
        assert time.monotonic() < deadline, "downloads did not finish"
        time.sleep(0.01)


def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


def awake_walk(stack, get_files: bool = True) -> tuple[list[str], list[str]]:
    """PROPFIND Depth 1 on every collection and GET every file, with the NAS awake.

    Returns (collections, files) as decoded paths.
    """
    collections, files = [], []
    todo = ["/"]
    while todo:
        path = todo.pop()
        collections.append(path)
        for member in listing(stack, path).values():
            if member.path == path:
                continue
            if member.is_dir:
                todo.append(member.path)
            else:
                files.append(member.path)
    if get_files:
        for path in files:
            response = stack.http.get(stack.url(url_path(path)))
            assert response.status_code == 200, (path, response.status_code)
        wait_downloads_idle(stack.app)
    return sorted(collections), sorted(files)


def index_row(app, path: str, view: str = ""):
    """The index row of `path` as a dict (None when there is none)."""
    row = app.db.query_one(
        "SELECT path, is_dir, size, etag, cache_key, dirty, local_only, listed FROM entries WHERE view = ? AND path = ?",
        (view, path),
    )
    if row is None:
        return None
    keys = ("path", "is_dir", "size", "etag", "cache_key", "dirty", "local_only", "listed")
    return dict(zip(keys, row))


def journal(app) -> list[tuple[str, str, str | None]]:
    """The pending changes for the NAS as (op, path, dest), in order."""
    return [tuple(r) for r in app.db.query("SELECT op, path, dest FROM journal ORDER BY id")]


def data_files(app) -> set[str]:
    """The content keys present under cache_dir/data (not their `.meta` sidecars)."""
    data = Path(app.settings.cache_dir) / "data"
    return {p.name for p in data.rglob("*") if p.is_file() and not p.name.endswith(".meta")}


def temp_files(app) -> list[Path]:
    return list((Path(app.settings.cache_dir) / "tmp").iterdir())


def referenced_keys(app) -> set[str]:
    return {r[0] for r in app.db.query("SELECT cache_key FROM entries WHERE cache_key IS NOT NULL")}


def nas_get(stack, path: str, method: str = "GET", **kwargs):
    """A request straight to the simulated NAS (counts as NAS traffic)."""
    from tests.stack import NAS_PASSWORD, NAS_USER

    import requests

    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, stack.nas.dav_url.rstrip("/") + url_path(path),
                               auth=(NAS_USER, NAS_PASSWORD), timeout=10, **kwargs)


def dropped_ranges(monkeypatch) -> list[tuple[int, int]]:
    """(offset, length) of every POSIX_FADV_DONTNEED the server asks for from now on (then done)."""
    calls: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def recording(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            calls.append((offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    return calls
