"""The lock that keeps one fl_server process per state directory (``flock`` on ``lock``)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import hefl_durable
from fl_server.errors import StateError

__all__ = ["DirectoryLock"]


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/lock``, held until ``release``.

    Raises
    ------
    StateError
        Another process holds it.
    """

    def __init__(self, directory: Path) -> None:
        self._fd = hefl_durable.open_private(directory / "lock", os.O_RDWR)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StateError(
                f"{directory} is in use by another fl_server process (one server per state "
                "directory; uvicorn --workers must be 1)"
            ) from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1
