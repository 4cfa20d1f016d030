"""Admission control: training-slot leases (async client sampling), rate limits, update queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fl_server.errors import RateLimitedError, ServerBusyError, SlotsFullError
from hefl_wire import AccessClaims

__all__ = ["RateLimiter", "SlotTable", "UpdateQueue", "UpdateTicket"]

Clock = Callable[[], float]


class SlotTable:
    """At most ``capacity`` clients hold a training slot at once; leases expire after ``ttl``.

    Acquiring again renews the client's lease (a heartbeat for long local training);
    an applied update releases it. Leases live in memory: after a restart clients
    simply ask again.
    """

    def __init__(self, capacity: int, ttl: float, *, clock: Clock = time.time) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("capacity must be >= 1 and ttl > 0")
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._leases: dict[str, float] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for client_id in [c for c, until in self._leases.items() if until <= now]:
            del self._leases[client_id]

    def acquire(self, client_id: str) -> float:
        """The new expiry (seconds since the epoch) of ``client_id``'s lease.

        Raises
        ------
        SlotsFullError
            Every slot is held by another client; ``retry_after`` is when the first expires.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            if client_id not in self._leases and len(self._leases) >= self.capacity:
                first_free = min(self._leases.values())
                raise SlotsFullError(
                    f"all {self.capacity} training slots are taken",
                    retry_after=first_free - now,
                )
            expires_at = now + self.ttl
            self._leases[client_id] = expires_at
            return expires_at

    def release(self, client_id: str) -> bool:
        """Give ``client_id``'s slot back; whether it held one."""
        with self._lock:
            return self._leases.pop(client_id, None) is not None

    def in_use(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._leases)

    def holders(self) -> tuple[str, ...]:
        """The clients holding a lease now."""
        with self._lock:
            self._expire(self._clock())
            return tuple(self._leases)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client: ``burst`` requests at once, refilled at ``per_minute``.

    ``per_minute == 0`` disables the limit.
    """

    def __init__(self, per_minute: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        if per_minute < 0 or burst < 1:
            raise ValueError("per_minute must be >= 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, client_id: str) -> None:
        """Spend one token of ``client_id``'s bucket.

        Raises
        ------
        RateLimitedError
            The bucket is empty; ``retry_after`` is when the next token arrives.
        """
        if self.rate == 0:
            return
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(client_id)
            if bucket is None:
                bucket = self._buckets[client_id] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens < 1.0:
                raise RateLimitedError(
                    f"at most {self.rate * 60:g} updates per minute per client",
                    retry_after=(1.0 - bucket.tokens) / self.rate,
                )
            bucket.tokens -= 1.0


class UpdateTicket:
    """An admitted update: holds a place in the apply queue until the update is answered."""

    def __init__(
        self, client: AccessClaims, max_body_bytes: int, on_release: Callable[[], None]
    ) -> None:
        self.client = client
        self.max_body_bytes = max_body_bytes
        self._on_release = on_release
        self._released = False
        self._handed_over = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._on_release()

    def hand_over(self, answer: Future[Any]) -> None:
        """The queue place is now released when ``answer`` resolves."""
        self._handed_over = True
        answer.add_done_callback(lambda _: self.release())

    def __enter__(self) -> UpdateTicket:
        return self

    def __exit__(self, *exc: object) -> None:
        # Once handed to the worker, the answer releases it: the worker may still hold it.
        if not self._handed_over:
            self.release()


class UpdateQueue:
    """Places for updates admitted but not yet answered, all clients together.

    An update takes a place before its body is read, so a burst of uploads never
    buffers more than ``max_queued`` bodies; each client's ``rate`` is spent there too.
    """

    def __init__(self, max_queued: int, rate: RateLimiter) -> None:
        self._max_queued = max_queued
        self._rate = rate
        self._lock = threading.Lock()
        self._queued = 0
        self._apply_seconds = 0.0

    def admit(self, client: AccessClaims, max_body_bytes: int) -> UpdateTicket:
        """A ticket for one of ``client``'s updates.

        Raises
        ------
        ServerBusyError
            The queue is full; ``retry_after`` is how long it takes to drain.
        RateLimitedError
            ``client`` sent too many updates lately.
        """
        with self._lock:
            if self._queued >= self._max_queued:
                raise ServerBusyError(
                    f"{self._queued} updates are waiting to be applied",
                    retry_after=self._queued * self._apply_seconds,
                )
            self._rate.take(client.client_id)
            self._queued += 1
        return UpdateTicket(client, max_body_bytes, self._release)

    def _release(self) -> None:
        with self._lock:
            self._queued -= 1

    def applied_in(self, seconds: float) -> None:
        """Time one update took on the worker (a moving average sizes ``retry_after``)."""
        with self._lock:
            self._apply_seconds = (
                seconds if not self._apply_seconds else (0.8 * self._apply_seconds + 0.2 * seconds)
            )

    def queued(self) -> int:
        with self._lock:
            return self._queued
