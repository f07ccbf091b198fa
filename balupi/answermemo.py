"""The answer memo: a connection's last cached GET, answered again without the WSGI tree (decision 230).

A client that asks for the same small file again and again on one keep-alive connection sends the
same request head byte for byte. Under the Pi's CPU budget, parsing that head and passing it
through the WSGI tree (host check, routing, the login, the path check, the index entry, the
conditionals, the answer's headers) costs as much again as the server's own work. So the hot path
(`balupi.httpio.FastConnection`) offers each plain GET an `AnswerMemo` (`environ[MEMO_KEY]`), and
each layer that decides something about the request fills in what its decision rests on:

- `WebGuard`: the Host header was judged (`host_ok`: the guard, to ask again when the Host is a name);
- `DavGuard`: the login was a remembered Basic login (`login`: the `Authenticator`'s stamp of it);
- `FastLane`: the answer is the whole in-memory copy of a verified file (`SmallCopies`), with the
  database generation its index entry was read under, and the access bookkeeping to repeat.

Only a 200 whose every layer signed is kept, with the request's exact head and the answer's head
as it went out. The next request on the connection with exactly that head is answered from it when
`replay` finds everything the answer rests on unchanged: the login still remembered and within its
recheck time (a password rejected since, a user forgotten, a recheck due: not replayed), the
database written by nobody since (this process's write generation and other processes' commits,
decision 201), the file still verified and its stat identity the one its copy was read with
(decision 200: one stat(2) per request stays). Then the side effects happen as on the long way
(the read is counted for the file's heat, the hit counters, the request histogram); the Date
header is fresh. Anything unchanged but not replayable, and every failed check, takes the long way.
"""

from __future__ import annotations

from typing import Callable

MEMO_KEY = "balupi.answer_memo"


class AnswerMemo:
    __slots__ = ("host_ok", "host", "auth", "login", "parts", "db_stamp", "key", "data", "size", "view", "path")

    def __init__(self):
        self.host_ok: Callable[[str], bool] | None = None
        self.host = ""
        self.auth = None  # balupi.auth.service.Authenticator (not imported: this module sits under the HTTP layer)
        self.login = None  # the Authenticator's stamp of a remembered Basic login
        self.parts = None  # balupi.dav.parts.CacheParts
        self.db_stamp = None
        self.key = ""
        self.data: bytes | None = None  # the body as answered; let go once the answer is kept
        self.size = 0
        self.view = ""
        self.path = ""

    def ready(self) -> bool:
        """Every layer signed: the answer may be kept."""
        return self.host_ok is not None and self.login is not None and self.data is not None

    def replay(self) -> bytes | None:
        """The body to send again, after the side effects of answering it; None (nothing done)
        when anything the answer rests on has changed."""
        if not self.host_ok(self.host) or not self.auth.login_still_good(self.login):
            return None
        parts = self.parts
        db = parts.db
        if (db.generation, db.outside_commits()) != self.db_stamp:
            return None
        key = self.key
        if key not in parts.verified:
            return None
        # The stat(2): the file is still the one its copy was read from. (A copy dropped and read
        # again since is the same bytes: content files are never changed in place, decision 200.)
        data = parts.store.small_copy(key)
        if data is None or len(data) != self.size:
            return None
        parts.index.note_access(self.view, self.path)
        stats = parts.stats
        stats.hits += 1
        stats.hit_bytes += len(data)
        return data
