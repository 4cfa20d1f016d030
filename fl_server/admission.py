"""Admission control: training-slot leases (async client sampling) and per-client rate limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fl_server.errors import RateLimitedError, SlotsFullError

__all__ = ["RateLimiter", "SlotTable"]

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
