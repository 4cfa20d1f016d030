"""The apply worker: one thread that runs every job change and ciphertext operation in order."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from fl_server.journal import running_future

__all__ = ["ApplyWorker"]

T = TypeVar("T")

logger = logging.getLogger("fl_server")


class ApplyWorker:
    """One thread running tasks in submission order; ``after_task(idle)`` runs after each.

    Built idle so that what ``after_task`` needs can be built with it; ``start`` starts
    the thread. Tasks submitted before ``start`` wait for it.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._after_task: Callable[[bool], None] = lambda idle: None
        self._thread = threading.Thread(target=self._run, name="hefl-apply", daemon=True)

    def start(self, after_task: Callable[[bool], None]) -> None:
        """Start the thread; ``after_task(idle)`` runs after every task, ``idle`` if none waits."""
        self._after_task = after_task
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = running_future()
        self._queue.put((fn, future))
        return future

    def has_work(self) -> bool:
        return not self._queue.empty()

    def close(self) -> None:
        """Run every queued task, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
            try:
                self._after_task(self._queue.empty())
            except Exception:
                logger.exception("publishing the model failed")
