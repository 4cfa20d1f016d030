"""A job's control state: paused, done and why, and the time it spent training; durable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace

from fl_server.domain import StopReason
from fl_server.journal import Journal
from fl_server.store import ControlRecord, Store

__all__ = ["SAVE_TRAINING_TIME_EVERY", "JobControl"]

# While a job trains, the time it spent is saved at most this often (seconds): a kill -9
# loses no more of a wall-time budget's progress than that.
SAVE_TRAINING_TIME_EVERY = 10.0


class JobControl:
    """Whether the job is paused or done (and why), and how long it has been training.

    Training time runs while the job is in ``training``: started (it has its initial
    model), neither paused nor done. Every change is written to ``control.json`` through
    the journal; ``pause``, ``resume`` and ``finish`` return the write's future. Changed
    on the apply worker only; any thread may read.

    Parameters
    ----------
    store, journal
        Where the control record goes, and the thread that writes it in order.
    started
        Whether the job has its initial model.
    clock
        Seconds since the epoch; injectable for tests.
    """

    def __init__(
        self,
        store: Store,
        journal: Journal,
        *,
        started: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._journal = journal
        self._started = started
        self._clock = clock
        self._lock = threading.Lock()
        self._record = ControlRecord()
        # When the current stretch of training began; its time is not in the record yet.
        self._since: float | None = None
        self._saved_at = 0.0

    def load(self) -> None:
        """Take the stored record (at startup) and start the clock if the job trains."""
        self._record = self._store.load_control() or ControlRecord()
        self.update_clock()

    # -- reading --------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._record.paused

    @property
    def done(self) -> bool:
        return self._record.done

    @property
    def stop_reason(self) -> StopReason | None:
        reason = self._record.stop_reason
        return StopReason(reason) if reason is not None else None

    def training_seconds(self) -> float:
        """Seconds spent in ``training``, the current stretch included."""
        with self._lock:
            record, since = self._record, self._since
        running = max(0.0, self._clock() - since) if since is not None else 0.0
        return record.training_seconds + running

    # -- changing (apply worker) ----------------------------------------------------------

    def update_clock(self) -> None:
        """Start or stop the training clock as the job enters or leaves ``training``."""
        training = self._started() and not self._record.paused and not self._record.done
        now = self._clock()
        with self._lock:
            # What ran until now is in the record; the clock goes on from now, or stops.
            if self._since is not None:
                spent = self._record.training_seconds + max(0.0, now - self._since)
                self._record = replace(self._record, training_seconds=spent)
            self._since = now if training else None

    def pause(self) -> Future[None]:
        return self._change(paused=True)

    def resume(self) -> Future[None]:
        return self._change(paused=False)

    def finish(self, reason: StopReason) -> Future[None]:
        """Done, for good: a done job never trains again."""
        return self._change(stop_reason=reason.value)

    def tick(self) -> Future[None] | None:
        """Save the training time now and then, so a crash keeps what was spent."""
        if self._since is not None and self._clock() - self._saved_at >= SAVE_TRAINING_TIME_EVERY:
            return self.save()
        return None

    def _change(
        self, *, paused: bool | None = None, stop_reason: str | None = None
    ) -> Future[None]:
        with self._lock:
            if paused is not None:
                self._record = replace(self._record, paused=paused)
            if stop_reason is not None:
                self._record = replace(self._record, stop_reason=stop_reason)
        self.update_clock()  # the time until now counts; from now on, as the new state says
        return self.save()

    def save(self) -> Future[None]:
        """Write the control record, with the training time so far."""
        record = replace(self._record, training_seconds=self.training_seconds())
        self._saved_at = self._clock()
        return self._journal.call(lambda: self._store.save_control(record))
