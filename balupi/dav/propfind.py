"""Multistatus XML for PROPFIND, built as text from index rows (one query per collection).

WsgiDAV builds a PROPFIND answer by asking each member for each property and assembling an
element tree: about 90 us per member per request on this machine, a second for a large folder on
the Pi. Here the same live properties (RFC 4918, plus lock support) are written straight from the
index's rows, plus the dead properties stored for them. The values are identical to WsgiDAV's,
except that `getetag` carries its quotes, as RFC 4918 says it must (the resources return it quoted
to WsgiDAV too).

Each member's response is one `str.format` of a template made once per request and kind of member
(collection, file with an ETag, file without; and, for a `<prop>` request, which of the asked names
the member has as dead properties): the template holds the tags, the member gives only its values.
The children come as plain rows (`Index.listing_rows`), not `Entry` objects; a name of plain
characters is its own href segment (no `quote` call).

The answer is streamed (`multistatus_chunks`, pieces of about `CHUNK_BYTES`): the listing's rows
are in memory, but dead property values are read for `DEAD_BATCH` members at a time (one query)
as their responses are written, so a large folder with large properties never sits in memory whole.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator
from urllib.parse import quote
from xml.sax.saxutils import escape

from defusedxml import ElementTree as ET

from balupi.cache.index import Entry
from balupi.dav import locks, props
from balupi.dav.props import storage_url
from balupi.db import Database
from balupi.httpfields import http_date

MAX_BODY_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
DEAD_BATCH = 32  # members whose dead properties are read in one query (each at most 64 KiB of them)
HREF_SAFE = "/!*'(),$-_|."

DAV = "{DAV:}"
LIVE = ("resourcetype", "creationdate", "getcontentlength", "getcontenttype", "getlastmodified", "displayname",
        "getetag", "lockdiscovery", "supportedlock")
SUPPORTED_LOCK = (
    "<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "</D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "</D:lockentry></D:supportedlock>"
)
HEAD = '<?xml version="1.0" encoding="utf-8" ?>\n<D:multistatus xmlns:D="DAV:">'
TAIL = "</D:multistatus>"
OK = "<D:status>HTTP/1.1 200 OK</D:status>"
NOT_FOUND = "<D:status>HTTP/1.1 404 Not Found</D:status>"

# A member's values, by their place in the templates' fields ({0} ... {7}; a <prop> request's dead
# properties follow from {8} on).
HREF, CREATED, LENGTH, TYPE, MODIFIED, NAME, ETAG, ALL_DEAD = range(8)
FIRST_DEAD = 8

# Characters `quote` leaves alone whatever its `safe`: such a name is its own href and ref URL segment.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.~-]*\Z").match


@dataclass(frozen=True)
class PropfindRequest:
    allprop: bool
    names: tuple[str, ...]  # Clark notation, for a <prop> request


def parse_request(body: bytes) -> PropfindRequest | None:
    """allprop (empty body or <allprop/>) or <prop> with names; None for what WsgiDAV should do."""
    if not body.strip():
        return PropfindRequest(True, ())
    try:
        root = ET.fromstring(body)
    except Exception:  # malformed, or entities/DTD refused: WsgiDAV answers with the right error
        return None
    if root.tag != DAV + "propfind" or len(root) != 1:
        return None
    child = root[0]
    if child.tag == DAV + "allprop":
        return PropfindRequest(True, ())
    if child.tag == DAV + "prop" and len(child):
        return PropfindRequest(False, tuple(el.tag for el in child))
    return None


def locks_in_play(db: Database, view: str) -> bool:
    """Whether any lock exists in `view` (then WsgiDAV builds the answer, with its lockdiscovery).
    Another view's locks are invisible to this one, so they do not send its listings the slow way."""
    return locks.any_in_view(db, view)


def ref_url(entry: Entry) -> str:
    """WsgiDAV's ref URL of `entry` (collections end in "/"), as dead properties are keyed."""
    if entry.path == "/":
        return "/"
    return quote(entry.path) + ("/" if entry.is_dir else "")


@lru_cache(maxsize=8192)
def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@lru_cache(maxsize=256)
def _content_type(value: str | None) -> str:
    return escape(value or "application/octet-stream")


@lru_cache(maxsize=4096)
def _quoted_name(name: str) -> tuple[str, str]:
    """(href segment, ref URL segment) of a name that is not plain."""
    return quote(name, safe=HREF_SAFE), quote(name)


def _live_fragments(is_dir: bool, has_etag: bool) -> dict[str, str]:
    """The live properties a member of this kind has, in `LIVE` order, as template fragments."""
    fragments = {
        "resourcetype": "<D:resourcetype><D:collection/></D:resourcetype>" if is_dir else "<D:resourcetype/>",
        "creationdate": f"<D:creationdate>{{{CREATED}}}</D:creationdate>",
        "getlastmodified": f"<D:getlastmodified>{{{MODIFIED}}}</D:getlastmodified>",
        "displayname": f"<D:displayname>{{{NAME}}}</D:displayname>",
        "lockdiscovery": "<D:lockdiscovery/>",
        "supportedlock": SUPPORTED_LOCK,
    }
    if not is_dir:
        fragments["getcontentlength"] = f"<D:getcontentlength>{{{LENGTH}}}</D:getcontentlength>"
        fragments["getcontenttype"] = f"<D:getcontenttype>{{{TYPE}}}</D:getcontenttype>"
        if has_etag:
            fragments["getetag"] = f"<D:getetag>{{{ETAG}}}</D:getetag>"
    return {name: fragments[name] for name in LIVE if name in fragments}


def _literal(text: str) -> str:
    """`text` as a literal part of a `str.format` template."""
    return text.replace("{", "{{").replace("}", "}}")


class _Templates:
    """The response templates of one request, made when a kind of member first needs one."""

    def __init__(self, request: PropfindRequest):
        self.request = request
        self.asked = frozenset(request.names)
        self._made: dict[tuple, str] = {}

    def get(self, is_dir: bool, has_etag: bool, dead_names: tuple[str, ...] = ()) -> str:
        """The template of a member of this kind; `dead_names`: which asked names it has as dead
        properties (a <prop> request only), their values going to fields FIRST_DEAD, ..."""
        key = (is_dir, has_etag, dead_names)
        template = self._made.get(key)
        if template is None:
            template = self._made[key] = self._make(is_dir, has_etag, dead_names)
        return template

    def _make(self, is_dir: bool, has_etag: bool, dead_names: tuple[str, ...]) -> str:
        live = _live_fragments(is_dir, has_etag)
        head = f"<D:response><D:href>{{{HREF}}}</D:href>"
        if self.request.allprop:
            return f"{head}<D:propstat><D:prop>{''.join(live.values())}{{{ALL_DEAD}}}</D:prop>{OK}</D:propstat></D:response>"
        found, missing = [], []
        for clark in self.request.names:
            local = clark[len(DAV):] if clark.startswith(DAV) else None
            if local is not None and local in live:
                found.append(live[local])
            elif clark in dead_names:
                found.append(f"{{{FIRST_DEAD + dead_names.index(clark)}}}")
            else:
                missing.append(_literal(_empty(clark)))
        parts = [head]
        if found:
            parts.append(f"<D:propstat><D:prop>{''.join(found)}</D:prop>{OK}</D:propstat>")
        if missing:
            parts.append(f"<D:propstat><D:prop>{''.join(missing)}</D:prop>{NOT_FOUND}</D:propstat>")
        parts.append("</D:response>")
        return "".join(parts)


def _empty(clark: str) -> str:
    if clark.startswith("{"):
        ns, local = clark[1:].split("}", 1)
        if ns == "DAV:":
            return f"<D:{local}/>"
        return f'<{local} xmlns="{escape(ns, {chr(34): "&quot;"})}"/>'
    return f"<{clark}/>"


def multistatus_chunks(mount: str, entry: Entry, children: list[tuple], request: PropfindRequest,
                       db: Database) -> Iterator[bytes]:
    """The answer for `entry` and its `children` (rows of `Index.listing_rows`; none for Depth 0),
    in pieces of about CHUNK_BYTES (the last one smaller)."""
    templates = _Templates(request)
    dead_urls = props.urls_with_props(db, entry.view, entry.path)
    path = entry.path if entry.path != "/" else ""
    own_href = quote(mount + path + ("/" if entry.is_dir else ""), safe=HREF_SAFE)
    own_ref = storage_url(entry.view, ref_url(entry))
    own_row = (entry.name, entry.is_dir, entry.size, entry.mtime, entry.ctime, entry.etag, entry.content_type)
    own_dead = props.stored_values_of(db, [own_ref]).get(own_ref, []) if own_ref in dead_urls else []
    out = [HEAD, _render(templates, own_row, own_href, own_dead)]
    size = len(out[1])
    href_prefix = quote(mount + path + "/", safe=HREF_SAFE)
    ref_prefix = storage_url(entry.view, quote(path + "/"))
    batches = [children[i:i + DEAD_BATCH] for i in range(0, len(children), DEAD_BATCH)] if dead_urls else [children]
    for batch in batches:
        hrefs, refs = [], []
        for row in batch:
            name, is_dir = row[0], row[1]
            if _PLAIN_NAME(name):
                href_name = ref_name = name
            else:
                href_name, ref_name = _quoted_name(name)
            if is_dir:
                hrefs.append(href_prefix + href_name + "/")
                refs.append(ref_prefix + ref_name + "/")
            else:
                hrefs.append(href_prefix + href_name)
                refs.append(ref_prefix + ref_name)
        dead = props.stored_values_of(db, [r for r in refs if r in dead_urls]) if dead_urls else {}
        for row, href, ref in zip(batch, hrefs, refs):
            piece = _render(templates, row, href, dead.get(ref, ()))
            out.append(piece)
            size += len(piece)
            if size >= CHUNK_BYTES:
                yield "".join(out).encode("utf-8")
                out, size = [], 0
    out.append(TAIL)
    yield "".join(out).encode("utf-8")


def _render(templates: _Templates, row: tuple, href: str, dead: list[tuple[str, bytes]] | tuple) -> str:
    """One member's <D:response>: its values put into its kind's template."""
    name, is_dir, size, mtime, ctime, etag, content_type = row
    if "&" in name or "<" in name or ">" in name:
        name = escape(name)
    values = [href, _rfc3339(ctime), size, "", http_date(mtime), name, "", ""]
    if not is_dir:
        values[TYPE] = _content_type(content_type)
        if etag:
            values[ETAG] = escape(f'"{etag}"')
    if not dead:
        return templates.get(bool(is_dir), bool(etag)).format(*values)
    if templates.request.allprop:
        values[ALL_DEAD] = b"".join(props.element_xml(value) for _, value in dead).decode("utf-8")
        return templates.get(bool(is_dir), bool(etag)).format(*values)
    asked = templates.asked
    dead_names = tuple(n for n, _ in dead if n in asked)
    by_name = dict(dead)
    values += [props.element_xml(by_name[n]).decode("utf-8") for n in dead_names]
    return templates.get(bool(is_dir), bool(etag), dead_names).format(*values)
