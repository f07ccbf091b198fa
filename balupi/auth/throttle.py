"""Growing delays after failed logins, per client address and per user name.

The first `free_attempts` failures cost nothing; after that each failure doubles the wait before
the next attempt is even looked at (`base_delay_s`, capped at `max_delay_s`). Both keys count: an
address guessing many names is slowed as one guessing one name from many addresses. Unknown and
known user names are counted alike, so the delays reveal nothing about which users exist. A
success clears the counters of its address and name; failures are forgotten a day after the last.
State lives in memory only (a restart forgets it) and is bounded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

FORGET_AFTER_S = 24 * 3600.0
MAX_KEYS = 10_000


@dataclass
class _Failures:
    count: int
    last_s: float


class Throttle:
    def __init__(self, free_attempts: int, base_delay_s: float, max_delay_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.free_attempts = free_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], _Failures] = {}

    @staticmethod
    def _keys(address: str, username: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("address", address), ("user", username.casefold())

    def delay_after(self, count: int) -> float:
        """The wait after `count` consecutive failures."""
        if count < self.free_attempts:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2 ** min(count - self.free_attempts, 32))

    def retry_after_s(self, address: str, username: str) -> float:
        """Seconds until an attempt from `address` for `username` will be looked at (0: now)."""
        return max(self.waits(address, username))

    def waits(self, address: str, username: str) -> tuple[float, float]:
        """(the wait of `address`, the wait of `username`), each 0 when none."""
        now = self.clock()
        found = []
        with self._lock:
            for key in self._keys(address, username):
                failures = self._failures.get(key)
                found.append(0.0 if failures is None else max(0.0, failures.last_s + self.delay_after(failures.count) - now))
        return found[0], found[1]

    def failed(self, address: str, username: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(address, username):
                failures = self._failures.get(key)
                if failures is None or now - failures.last_s > FORGET_AFTER_S:
                    self._failures[key] = _Failures(1, now)
                else:
                    failures.count += 1
                    failures.last_s = now
            if len(self._failures) > MAX_KEYS:
                self._prune(now)

    def succeeded(self, address: str, username: str) -> None:
        with self._lock:
            for key in self._keys(address, username):
                self._failures.pop(key, None)

    def _prune(self, now: float) -> None:
        """Forget stale keys; if still too many, the oldest half (their delays have run longest)."""
        for key in [k for k, f in self._failures.items() if now - f.last_s > FORGET_AFTER_S]:
            del self._failures[key]
        if len(self._failures) > MAX_KEYS:
            oldest = sorted(self._failures, key=lambda k: self._failures[k].last_s)[: len(self._failures) // 2]
            for key in oldest:
                del self._failures[key]
