"""What a client sees of a file's version: its ETag, `getlastmodified` and `getcontentlength`.

The rule (decision 60): these follow the file's *content*, never its storage state. They change
when the content changes, and only then:
- a client writes the file (PUT, or LOCK creating an empty one, or COPY onto it): a new version,
  ETag `l-<content key of that write>` (`local_version_etag`);
- the NAS shows a version the Pi did not know (a refresh's listing, a download, a conflict): the
  new version's ETag is the NAS's own ETag for it (`nas_version_etag`).
Write-back (the Pi's version reaching the NAS), a refresh that finds the same version, eviction and
a later re-download of the same version leave all three as they were.

The index keeps the two apart: `entries.etag` is the client's ETag (what the fast lane, PROPFIND
and WsgiDAV's conditionals use, verbatim), `entries.nas_etag` the NAS's ETag of the same content,
used only when talking to the NAS (is the NAS's copy still what we know? conflict checks). So a
version the NAS reports is "the same" when its ETag equals `nas_etag` (`same_nas_version`).
"""

from __future__ import annotations


def local_version_etag(key: str) -> str:
    """The ETag of content a client wrote on the Pi, stored under content key `key`."""
    return f"l-{key}"


def nas_version_etag(nas_etag: str | None) -> str | None:
    """The ETag of a version first seen on the NAS (None when the NAS gives none)."""
    return nas_etag or None


def same_nas_version(known_nas_etag: str | None, known_size: int, nas_etag: str | None, nas_size: int | None) -> bool:
    """Whether the NAS's version (`nas_etag`, `nas_size`) is the content the index already knows.

    With no NAS ETag recorded (a NAS without ETags; content our own sync moved into place, whose
    new NAS ETag the next listing brings), the size decides, as it did before ETags were kept apart.
    """
    if nas_size is not None and nas_size != known_size:
        return False
    if known_nas_etag:
        return (nas_etag or None) == known_nas_etag
    return True
