"""Messages between the server and its shard workers: a JSON header, then raw byte frames.

Nothing is pickled: a worker reads only JSON and ciphertext bytes it validates itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["IncomingFrames", "receive_header", "receive_message", "send_message"]


def send_message(
    conn: Connection, header: dict[str, Any], frames: Iterable[bytes] = (), count: int = -1
) -> None:
    """Send ``header`` (JSON) and then each of the ``count`` frames (all of a list's if not
    given: an iterator may make each while the one before is on its way; the caller may
    also send them itself, with ``conn.send_bytes``); ``OSError`` if the other end is gone."""
    if count < 0:
        frames = list(frames)
        count = len(frames)
    conn.send_bytes(json.dumps({**header, "frames": count}).encode())
    for frame in frames:
        conn.send_bytes(frame)


def receive_header(conn: Connection) -> tuple[dict[str, Any], IncomingFrames]:
    """The next header, and its frames to read one at a time; ``EOFError`` if the other
    end is gone."""
    header = json.loads(conn.recv_bytes())
    if not isinstance(header, dict):
        raise ValueError("a message header must be a JSON object")
    return header, IncomingFrames(conn, int(header.pop("frames")))


def receive_message(conn: Connection) -> tuple[dict[str, Any], list[bytes]]:
    """The next header and its frames; ``EOFError`` if the other end is gone."""
    header, frames = receive_header(conn)
    return header, list(frames)


class IncomingFrames:
    """A message's frames, read from the pipe as they are taken (never held all at once)."""

    def __init__(self, conn: Connection, count: int) -> None:
        self._conn = conn
        self.left = count

    def __iter__(self) -> IncomingFrames:
        return self

    def __next__(self) -> bytes:
        if self.left <= 0:
            raise StopIteration
        self.left -= 1
        return self._conn.recv_bytes()

    def drain(self) -> None:
        """Read and drop the frames not taken (an operation that failed half-way)."""
        while self.left > 0:
            next(self)
