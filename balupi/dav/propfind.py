"""Multistatus XML for PROPFIND, built as text from index rows (one query per collection).

WsgiDAV builds a PROPFIND answer by asking each member for each property and assembling an
element tree: about 90 us per member per request on this machine, a second for a large folder on
the Pi. Here the same live properties (RFC 4918, plus lock support) are written straight from the
index's rows, plus the dead properties stored for them and the discovery of the locks held on them
(`listing_locks`, one query; decision 260). The values are identical to WsgiDAV's,
except that `getetag` carries its quotes, as RFC 4918 says it must (the resources return it quoted
to WsgiDAV too).

Each member's response is one call of a template compiled once per request and kind of member
(collection, file with an ETag, file without; and, for a `<prop>` request, which of the asked names
the member has as dead properties): the template holds the tags, the member gives only its values.
The children come as plain rows (`Index.listing_rows`), not `Entry` objects; their names are quoted
for the hrefs in one pass when they hold nothing but plain characters and spaces (`_segments`).

The answer is streamed (`multistatus_chunks`, pieces of about `CHUNK_BYTES`): the listing's rows
are in memory, but dead property values are read for `DEAD_BATCH` members that have some at a time
(one query) as their responses are written, so a large folder with large properties never sits in memory whole.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator
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
CACHED_NAMES_CHARS = 2048  # a <prop> request's templates are kept if its names are this short (`_template`)
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

NO_LOCKS = "<D:lockdiscovery/>"

# A member's values, by their place in the templates' fields ({0} ... {8}; a <prop> request's dead
# properties follow from {9} on).
HREF, CREATED, LENGTH, TYPE, MODIFIED, NAME, ETAG, ALL_DEAD, LOCKS = range(9)
FIRST_DEAD = 9

# Names that `quote` changes at most by turning spaces into "%20" (with "/", which joins names).
_HREF_PLAIN = re.compile(r"[A-Za-z0-9_.~!*'(),$|%/-]*\Z").match  # quote(name, safe=HREF_SAFE)
_REF_PLAIN = re.compile(r"[A-Za-z0-9_.~%/-]*\Z").match  # quote(name)


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


def lock_root(entry: Entry) -> str:
    """`entry`'s lock root as WsgiDAV keys its locks (`normalize_lock_root` of its ref URL)."""
    return "/" + quote(entry.path).strip("/")


def listing_locks(db: Database, entry: Entry, with_members: bool) -> dict[str, list[dict]] | None:
    """The locks whose discovery the answer for `entry` (and, `with_members`, its members) shows,
    by lock root, each with its owner's XML as "owner_xml"; None when one of them cannot be written
    as WsgiDAV writes it (then WsgiDAV builds the answer).

    WsgiDAV's lockdiscovery of a resource (`DAVResource.get_property_value`) lists
    `get_url_lock_list(ref URL)`: the locks rooted at that resource, not those it is under by a
    depth-infinity lock on a folder above it. Only `entry`'s view's locks; expired ones are not shown
    (WsgiDAV's storage leaves them out too)."""
    found: dict[str, list[dict]] = {}
    for lock in locks.listing_locks(db, entry.view, lock_root(entry), with_members):
        owner_xml = _owner_xml(lock["owner"])
        if (owner_xml is None or lock["type"] != "write" or lock["scope"] not in ("exclusive", "shared")
                or lock["depth"] not in ("0", "infinity")):
            return None
        lock["owner_xml"] = owner_xml
        found.setdefault(lock["root"], []).append(lock)
    return found


def _owner_xml(owner: bytes) -> str | None:
    """A lock's owner (the <owner> element of its LOCK request, as WsgiDAV stored it: XML with a
    declaration) as a fragment to put into <D:activelock>; "" for none, None if it is not one
    well-formed element (WsgiDAV's own answer then says what it says about that)."""
    if not owner:
        return ""
    try:
        ET.fromstring(owner)
        return props.element_xml(owner).decode("utf-8").rstrip()
    except Exception:  # not well-formed, refused (entities, DTD) or not UTF-8
        return None


def lock_discovery(found: list[dict], href: str) -> str:
    """<D:lockdiscovery> of a resource at `href` with the locks `found` rooted at it, each
    <D:activelock> as WsgiDAV writes it: locktype, lockscope, depth, owner, timeout (the seconds
    left, "Second-N"), locktoken, lockroot (the resource itself, its `href`)."""
    now = time.time()
    parts = ["<D:lockdiscovery>"]
    for lock in found:
        # (at least 0: a large answer streamed to a slow client may reach a lock after it ran out)
        timeout = "Infinite" if lock["timeout"] < 0 else f"Second-{max(0, int(lock['expire'] - now))}"
        parts.append(
            f"<D:activelock><D:locktype><D:{lock['type']}/></D:locktype><D:lockscope><D:{lock['scope']}/></D:lockscope>"
            f"<D:depth>{lock['depth']}</D:depth>{lock['owner_xml']}<D:timeout>{timeout}</D:timeout>"
            f"<D:locktoken><D:href>{escape(lock['token'])}</D:href></D:locktoken>"
            f"<D:lockroot><D:href>{escape(href)}</D:href></D:lockroot></D:activelock>")
    parts.append("</D:lockdiscovery>")
    return "".join(parts)


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


def _segments(names: list[str], safe: str, plain: Callable) -> list[str]:
    """`quote(name, safe=safe)` of each name (names never hold "/"), most often in one pass over
    them all: a space is the only character quoted in most names. `plain` matches what needs no
    more than that (a `_HREF_PLAIN` or `_REF_PLAIN`)."""
    if not names:
        return []
    joined = "/".join(names)
    if "%" not in joined:
        spaced = joined.replace(" ", "%20")
        if plain(spaced):
            segments = spaced.split("/")
            if len(segments) == len(names):  # (a name holding "/" would shift every href after it)
                return segments
    return [_segment(name, safe, plain) for name in names]


def _segment(name: str, safe: str, plain: Callable) -> str:
    if "%" not in name:
        spaced = name.replace(" ", "%20")
        if plain(spaced):
            return spaced
    return quote(name, safe=safe)


def _live_fragments(is_dir: bool, has_etag: bool) -> dict[str, list]:
    """The live properties a member of this kind has, in `LIVE` order, as template pieces (text,
    or the number of a field)."""
    fragments = {
        "resourcetype": ["<D:resourcetype><D:collection/></D:resourcetype>" if is_dir else "<D:resourcetype/>"],
        "creationdate": ["<D:creationdate>", CREATED, "</D:creationdate>"],
        "getlastmodified": ["<D:getlastmodified>", MODIFIED, "</D:getlastmodified>"],
        "displayname": ["<D:displayname>", NAME, "</D:displayname>"],
        "lockdiscovery": [LOCKS],
        "supportedlock": [SUPPORTED_LOCK],
    }
    if not is_dir:
        fragments["getcontentlength"] = ["<D:getcontentlength>", LENGTH, "</D:getcontentlength>"]
        fragments["getcontenttype"] = ["<D:getcontenttype>", TYPE, "</D:getcontenttype>"]
        if has_etag:
            fragments["getetag"] = ["<D:getetag>", ETAG, "</D:getetag>"]
    return {name: fragments[name] for name in LIVE if name in fragments}


def _compile(pieces: list) -> Callable[[list], str]:
    """A function joining `pieces` (text, or the number of a field of its argument, a member's
    values) into one string: an f-string made once per template, which CPython joins 3-8 times
    faster than `str.format` or `%` with the same fields. The generated source holds only names and
    field numbers; the text (which may come from the request, e.g. an unknown property's
    namespace) is handed over as variables, never as code."""
    merged: list = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        elif piece != "":
            merged.append(piece)
    texts: dict[str, str] = {}
    source = []
    for piece in merged:
        if isinstance(piece, int):
            source.append(f"{{v[{piece}]}}")
        else:
            name = f"t{len(texts)}"
            texts[name] = piece
            source.append(f"{{{name}}}")
    return eval(f"lambda v: f'{''.join(source)}'", texts)  # noqa: S307 (see above: no outside text in the code)


class _Templates:
    """The response templates of one request, made when a kind of member first needs one."""

    def __init__(self, request: PropfindRequest):
        self.request = request
        self.asked = frozenset(request.names)
        self._made: dict[tuple, Callable[[list], str]] = {}
        # A usual request's templates are kept for the next one; an unusually long one is not.
        self._maker = _template if sum(map(len, request.names)) <= CACHED_NAMES_CHARS else _template.__wrapped__

    def get(self, is_dir: bool, has_etag: bool, dead_names: tuple[str, ...] = ()) -> Callable[[list], str]:
        """The template of a member of this kind; `dead_names`: which asked names it has as dead
        properties (a <prop> request only), their values going to fields FIRST_DEAD, ..."""
        key = (is_dir, has_etag, dead_names)
        template = self._made.get(key)
        if template is None:
            template = self._made[key] = self._maker(self.request, is_dir, has_etag, dead_names)
        return template


@lru_cache(maxsize=64)  # clients send the same few requests again and again; compiling one costs ~0.1 ms
def _template(request: PropfindRequest, is_dir: bool, has_etag: bool, dead_names: tuple[str, ...]) -> Callable[[list], str]:
    return _compile(_pieces(request, is_dir, has_etag, dead_names))


def _pieces(request: PropfindRequest, is_dir: bool, has_etag: bool, dead_names: tuple[str, ...]) -> list:
    live = _live_fragments(is_dir, has_etag)
    pieces: list = ["<D:response><D:href>", HREF, "</D:href>"]
    if request.allprop:
        pieces.append("<D:propstat><D:prop>")
        for fragment in live.values():
            pieces += fragment
        pieces += [ALL_DEAD, "</D:prop>", OK, "</D:propstat></D:response>"]
        return pieces
    found: list = []
    missing: list = []
    for clark in request.names:
        local = clark[len(DAV):] if clark.startswith(DAV) else None
        if local is not None and local in live:
            found += live[local]
        elif clark in dead_names:
            found.append(FIRST_DEAD + dead_names.index(clark))
        else:
            missing.append(_empty(clark))
    if found:
        pieces += ["<D:propstat><D:prop>", *found, "</D:prop>", OK, "</D:propstat>"]
    if missing:
        pieces += ["<D:propstat><D:prop>", *missing, "</D:prop>", NOT_FOUND, "</D:propstat>"]
    pieces.append("</D:response>")
    return pieces


def _empty(clark: str) -> str:
    if clark.startswith("{"):
        ns, local = clark[1:].split("}", 1)
        if ns == "DAV:":
            return f"<D:{local}/>"
        return f'<{local} xmlns="{escape(ns, {chr(34): "&quot;"})}"/>'
    return f"<{clark}/>"


def multistatus_chunks(mount: str, entry: Entry, children: list[tuple], request: PropfindRequest,
                       db: Database, held: dict[str, list[dict]] | None = None) -> Iterator[bytes]:
    """The answer for `entry` and its `children` (rows of `Index.listing_rows`; none for Depth 0),
    in pieces of about CHUNK_BYTES (the last one smaller). `held`: the locks to show, by lock root
    (`listing_locks`)."""
    templates = _Templates(request)
    dead_urls = props.urls_with_props(db, entry.view, entry.path)
    path = entry.path if entry.path != "/" else ""
    own_href = quote(mount + path + ("/" if entry.is_dir else ""), safe=HREF_SAFE)
    own_ref = storage_url(entry.view, ref_url(entry))
    own_row = (entry.name, entry.is_dir, entry.size, entry.mtime, entry.ctime, entry.etag, entry.content_type)
    own_dead = props.stored_values_of(db, [own_ref]).get(own_ref, []) if own_ref in dead_urls else []
    held = held or {}
    own_root = lock_root(entry)
    out = [HEAD, _render(templates, own_row, own_href, own_dead, held.get(own_root, ()))]
    size = len(out[1])
    href_prefix = quote(mount + path + "/", safe=HREF_SAFE)
    names = [row[0] for row in children]
    dead_of = _DeadReader(db, dead_urls, storage_url(entry.view, quote(path + "/")), children, names) if dead_urls else None
    locks_of = _member_locks(held, own_root, names)
    for i, (row, segment) in enumerate(zip(children, _segments(names, HREF_SAFE, _HREF_PLAIN))):
        href = href_prefix + segment + "/" if row[1] else href_prefix + segment
        piece = _render(templates, row, href, dead_of(i) if dead_of is not None else (), locks_of.get(i, ()))
        out.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield "".join(out).encode("utf-8")
            out, size = [], 0
    out.append(TAIL)
    yield "".join(out).encode("utf-8")


def _member_locks(held: dict[str, list[dict]], own_root: str, names: list[str]) -> dict[int, list[dict]]:
    """{member number: its locks} of a listing's members that have locks (most often none)."""
    if not any(root != own_root for root in held):
        return {}
    prefix = own_root.rstrip("/") + "/"
    return {i: held[prefix + segment] for i, segment in enumerate(_segments(names, "/", _REF_PLAIN))
            if prefix + segment in held}


class _DeadReader:
    """The dead properties of a listing's members, read `DEAD_BATCH` members that have some at a
    time (one query each) as the answer reaches them."""

    def __init__(self, db: Database, dead_urls: set[str], ref_prefix: str, children: list[tuple], names: list[str]):
        self.db = db
        self.refs = refs = [ref_prefix + segment + "/" if row[1] else ref_prefix + segment
                            for row, segment in zip(children, _segments(names, "/", _REF_PLAIN))]
        having = [i for i, ref in enumerate(refs) if ref in dead_urls]
        # member number -> the storage URLs to read when the answer reaches it
        self.reads = {having[k]: [refs[i] for i in having[k:k + DEAD_BATCH]] for k in range(0, len(having), DEAD_BATCH)}
        self.values: dict[str, list[tuple[str, bytes]]] = {}

    def __call__(self, i: int) -> list[tuple[str, bytes]] | tuple:
        read = self.reads.get(i)
        if read is not None:
            self.values = props.stored_values_of(self.db, read)  # the previous batch's values go
        return self.values.get(self.refs[i], ())


def _render(templates: _Templates, row: tuple, href: str, dead: list[tuple[str, bytes]] | tuple,
            held: list[dict] | tuple = ()) -> str:
    """One member's <D:response>: its values put into its kind's template."""
    name, is_dir, size, mtime, ctime, etag, content_type = row
    if "&" in name or "<" in name or ">" in name:
        name = escape(name)
    if is_dir:
        values = [href, _rfc3339(ctime), size, "", http_date(mtime), name, "", "", NO_LOCKS]
    else:
        if etag:
            etag_text = f'"{etag}"'
            if "&" in etag_text or "<" in etag_text or ">" in etag_text:
                etag_text = escape(etag_text)
        else:
            etag_text = ""
        values = [href, _rfc3339(ctime), size, _content_type(content_type), http_date(mtime), name, etag_text, "",
                  NO_LOCKS]
    if held:
        values[LOCKS] = lock_discovery(held, href)
    if not dead:
        return templates.get(bool(is_dir), bool(etag))(values)
    if templates.request.allprop:
        values[ALL_DEAD] = b"".join(props.element_xml(value) for _, value in dead).decode("utf-8")
        return templates.get(bool(is_dir), bool(etag))(values)
    asked = templates.asked
    dead_names = tuple(n for n, _ in dead if n in asked)
    by_name = dict(dead)
    values += [props.element_xml(by_name[n]).decode("utf-8") for n in dead_names]
    return templates.get(bool(is_dir), bool(etag), dead_names)(values)
