"""Waiting for the published model to reach a version (an update that leases the next round)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from fl_server.journal import running_future

__all__ = ["PublishedWaiters"]


class PublishedWaiters:
    """Futures that resolve once the published model's version reaches theirs.

    ``reached`` is called on the apply worker after each task (the model may have been
    published); ``wait_for`` from any thread. The lock orders the two: a waiter registered
    after a publish sees its version at once, one registered before is resolved by it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published = -1
        self._waiting: list[tuple[int, Future[int]]] = []

    def wait_for(self, version: int) -> Future[int]:
        """A future of the published version, once it is ``version`` or later."""
        future: Future[int] = running_future()
        with self._lock:
            if self._published >= version:
                future.set_result(self._published)
            else:
                self._waiting.append((version, future))
        return future

    def reached(self, published: int) -> None:
        """The published version is now ``published``: resolve the waiters it reaches."""
        with self._lock:
            self._published = max(self._published, published)
            ready = [f for v, f in self._waiting if v <= self._published]
            self._waiting = [(v, f) for v, f in self._waiting if v > self._published]
        # a waiter that gave up (its request timed out) is resolved all the same: harmless
        for future in ready:
            future.set_result(published)
