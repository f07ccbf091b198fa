"""One resource per thread (a SQLite connection, an HTTP session), closed when its thread ends.

BaluPi starts a thread for every cache miss, every prefetched file and every run of a scheduled job.
A resource kept per thread in a plain `threading.local` plus a list for shutdown outlives its thread:
that list grew by about 2 descriptors and 160 KB per miss and 20 descriptors per idle minute, until
the process ran out of descriptors. Here each thread's resource is closed

- when the thread ends: the thread-local holder is dropped by the exiting thread (CPython clears a
  thread's locals as it exits), and the holder closes what it holds;
- when a thread opens one, at most once a second (`REAP_INTERVAL_S`): resources of threads no
  longer alive are closed (a safety net, e.g. for a holder kept alive by a reference cycle; not at
  every open, since threads that hand theirs back after each request open one again each time);
- at shutdown: `close_all()`.

So the number open never exceeds the number of live threads that use one (plus, for a moment, those
of threads that ended within the last second without dropping their holder). "Close" is the
owner's `close_fn`: the database's keeps a few connections for the next thread (balupi.db).

Lock order: `PerThread._lock` is a leaf; `close` functions are called without it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Generic, TypeVar

log = logging.getLogger("balupi.perthread")

T = TypeVar("T")

REAP_INTERVAL_S = 1.0


class _Holder(Generic[T]):
    """Lives in the owning thread's locals only; when the thread ends, it is dropped and closes."""

    __slots__ = ("owner", "item", "key")

    def __init__(self, owner: "PerThread[T]", item: T, key: int):
        self.owner, self.item, self.key = owner, item, key

    def __del__(self) -> None:
        self.owner._release(self.key)


class PerThread(Generic[T]):
    def __init__(self, open_fn: Callable[[], T], close_fn: Callable[[T], None], what: str):
        self._open, self._close, self.what = open_fn, close_fn, what
        self._lock = threading.Lock()
        self._local = threading.local()
        self._items: dict[int, tuple[threading.Thread, T]] = {}
        self._next_key = 0
        self.opened = 0  # ever; `len(self)` is the number open now
        self.closed_at_thread_end = 0
        self._reaped_at = float("-inf")

    def get(self) -> T:
        holder = getattr(self._local, "holder", None)
        if holder is not None:
            return holder.item
        now = time.monotonic()
        if now - self._reaped_at >= REAP_INTERVAL_S:
            self._reaped_at = now
            self.reap()
        item = self._open()
        with self._lock:
            self._next_key += 1
            key = self._next_key
            self._items[key] = (threading.current_thread(), item)
            self.opened += 1
        self._local.holder = _Holder(self, item, key)
        return item

    def current(self) -> T | None:
        """This thread's resource if it has one (without opening one)."""
        holder = getattr(self._local, "holder", None)
        return None if holder is None else holder.item

    def release_current(self) -> None:
        """Close this thread's resource now (a thread that is about to wait a long time)."""
        holder = getattr(self._local, "holder", None)
        if holder is not None:
            del self._local.holder  # the holder's __del__ closes it

    def _release(self, key: int) -> None:
        with self._lock:
            found = self._items.pop(key, None)
            if found is not None:
                self.closed_at_thread_end += 1
        if found is not None:
            self._close_quietly(found[1])

    def reap(self) -> int:
        """Close the resources of threads that have ended. Returns how many."""
        with self._lock:
            dead = [key for key, (thread, _) in self._items.items() if not thread.is_alive()]
            items = [self._items.pop(key)[1] for key in dead]
        for item in items:
            self._close_quietly(item)
        return len(items)

    def close_all(self) -> None:
        with self._lock:
            items = [item for _, item in self._items.values()]
            self._items.clear()
        for item in items:
            self._close_quietly(item)
        self._local = threading.local()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _close_quietly(self, item: T) -> None:
        try:
            self._close(item)
        except Exception as exc:  # closing must never fail the thread that ends
            log.debug("closing a %s failed: %s", self.what, exc)
