"""Byte counters: request bodies received and model bytes sent, since the server started."""

from __future__ import annotations

import threading

__all__ = ["Traffic"]


class Traffic:
    """Thread-safe totals of bytes in and out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in = 0
        self._out = 0

    def count_in(self, n: int) -> None:
        with self._lock:
            self._in += n

    def count_out(self, n: int) -> None:
        with self._lock:
            self._out += n

    def totals(self) -> tuple[int, int]:
        """Bytes received and bytes sent."""
        with self._lock:
            return self._in, self._out
