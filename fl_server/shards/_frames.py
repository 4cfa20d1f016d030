"""Messages between the server and its shard workers: a JSON header, then raw byte frames.

Nothing is pickled: a worker reads only JSON and ciphertext bytes it validates itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["receive_message", "send_message"]


def send_message(
    conn: Connection, header: dict[str, Any], frames: Iterable[bytes] = (), count: int = -1
) -> None:
    """Send ``header`` (JSON) and then each of the ``count`` frames (all of a list's if not
    given: an iterator may make each while the one before is on its way); ``OSError`` if
    the other end is gone."""
    if count < 0:
        frames = list(frames)
        count = len(frames)
    conn.send_bytes(json.dumps({**header, "frames": count}).encode())
    for frame in frames:
        conn.send_bytes(frame)


def receive_message(conn: Connection) -> tuple[dict[str, Any], list[bytes]]:
    """The next header and its frames; ``EOFError`` if the other end is gone."""
    header = json.loads(conn.recv_bytes())
    if not isinstance(header, dict):
        raise ValueError("a message header must be a JSON object")
    frames = [conn.recv_bytes() for _ in range(int(header.pop("frames")))]
    return header, frames
