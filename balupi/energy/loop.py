"""One long-lived asyncio event loop in its own thread, for python-kasa.

python-kasa is asyncio-only and a `Device` is bound to the loop it was created on, so every plug
lives on this one loop for the life of the process. Other threads hand it coroutines:
`submit(coro)` returns a `concurrent.futures.Future` at once; `run(coro, timeout_s)` waits for the
result (raising `TimeoutError` after timeout_s; the coroutine is cancelled then).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Coroutine, TypeVar

log = logging.getLogger("balupi.energy")

T = TypeVar("T")


class EventLoopThread:
    def __init__(self, name: str = "balupi-energy-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._ready.clear()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                for _ in range(5):  # cancelling a task can start another (closing a connection)
                    loop.run_until_complete(asyncio.sleep(0))  # let done-callbacks start theirs
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    if not pending:
                        break
                    for task in pending:
                        task.cancel()
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        if self._loop is None or not self.running:
            coro.close()
            raise RuntimeError("the energy event loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run a coroutine on the loop and wait for its result (never call this from the loop itself)."""
        future = self.submit(coro)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout_s:g} s") from None

    def stop(self, cleanup: Coroutine[Any, Any, Any] | None = None, timeout_s: float = 5.0) -> None:
        """Run `cleanup` (closing the plugs' sessions), then stop the loop and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            if cleanup is not None:
                cleanup.close()
            return
        if cleanup is not None and thread.is_alive():
            try:
                self.run(cleanup, timeout_s)
            except Exception as exc:  # closing is best effort
                log.debug("energy loop cleanup failed: %s", exc)
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
        self._loop = self._thread = None
