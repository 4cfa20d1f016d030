"""The journal thread: log records and checkpoints reach the ``Store`` in order, off the apply path.

File I/O releases the GIL, so logging update ``n`` overlaps with deserializing update
``n + 1`` on the apply worker. Records that queue up while an fsync runs are written
together and share the next fsync (group commit).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

from fl_server.errors import StorageError
from fl_server.store import LogRecord, Store

__all__ = ["Journal", "running_future"]

T = TypeVar("T")

logger = logging.getLogger("fl_server.journal")


def running_future() -> Future[T]:
    """A future that cannot be cancelled: an awaiting request that goes away leaves it be."""
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()
    return future


@dataclass
class _Append:
    record: LogRecord
    future: Future[None]


@dataclass
class _Call:
    action: Callable[[], None]
    future: Future[None]


_Op = _Append | _Call


class Journal:
    """Durable writes in submission order on one thread.

    Parameters
    ----------
    store
        Where records and checkpoints go; only this journal's thread writes to it.
    durable_seq
        The highest record ``seq`` already durable (after recovery).

    After a failed write every later write fails too (``StorageError``): the records that
    follow a lost one must not become durable without it.
    """

    def __init__(self, store: Store, *, durable_seq: int = 0) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._durable_seq = durable_seq
        self._failure: StorageError | None = None
        self._waiters: list[tuple[int, Future[None]]] = []
        self._thread = threading.Thread(target=self._run, name="hefl-journal", daemon=True)
        self._thread.start()

    @property
    def failure(self) -> StorageError | None:
        return self._failure

    def append(self, record: LogRecord) -> Future[None]:
        """Log ``record`` (an update, a repair, a release); the future resolves once it is
        durable."""
        future: Future[None] = running_future()
        self._queue.put(_Append(record, future))
        return future

    def call(self, action: Callable[[], None]) -> Future[None]:
        """Run a store write (a checkpoint, the job) after every write submitted before it."""
        future: Future[None] = running_future()
        self._queue.put(_Call(action, future))
        return future

    def mark_durable(self, seq: int) -> None:
        """Records up to ``seq`` are durable already (they were recovered from the log)."""
        with self._lock:
            self._durable_seq = max(self._durable_seq, seq)

    def durable(self, seq: int) -> Future[None]:
        """A future that resolves once the record ``seq`` is durable."""
        future: Future[None] = running_future()
        with self._lock:
            if self._durable_seq >= seq:
                future.set_result(None)
            elif self._failure is not None:
                future.set_exception(self._failure)
            else:
                self._waiters.append((seq, future))
        return future

    def wait_durable(self, seq: int) -> None:
        """Block until the record ``seq`` is durable; ``StorageError`` if it never will be."""
        self.durable(seq).result()

    def close(self) -> None:
        """Finish every submitted write, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            ops = [self._queue.get()]
            while True:
                try:
                    ops.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            group: list[_Append] = []
            for op in ops:
                if isinstance(op, _Append):
                    group.append(op)
                    continue
                self._append_group(group)
                group = []
                if op is None:
                    return
                self._write(op.action, [op.future])
                self._settle_waiters()
            self._append_group(group)

    def _append_group(self, group: list[_Append]) -> None:
        if not group:
            return
        records = [a.record for a in group]
        if self._write(lambda: self._store.append_updates(records), [a.future for a in group]):
            with self._lock:
                # A repair or release carries the seq of the update it follows.
                self._durable_seq = max(self._durable_seq, records[-1].seq)
        self._settle_waiters()

    def _write(self, action: Callable[[], None], futures: list[Future[None]]) -> bool:
        if self._failure is None:
            try:
                action()
            except Exception as exc:
                logger.exception("durable write failed; refusing further writes until restart")
                with self._lock:
                    self._failure = StorageError(f"the state directory cannot be written: {exc}")
        for future in futures:
            if self._failure is None:
                future.set_result(None)
            else:
                future.set_exception(self._failure)
        return self._failure is None

    def _settle_waiters(self) -> None:
        with self._lock:
            durable, failure = self._durable_seq, self._failure
            done = [w for w in self._waiters if w[0] <= durable or failure is not None]
            self._waiters = [w for w in self._waiters if w[0] > durable and failure is None]
        for seq, future in done:
            if seq <= durable:
                future.set_result(None)
            else:
                assert failure is not None
                future.set_exception(failure)
