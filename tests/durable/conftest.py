"""Fixtures for the durable-file tests: a process umask, and a log of file-system calls."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """``os.umask`` for the test; the umask it found comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    yield os.umask

    os.umask(old)


class CallLog:
    """The ``os.mkdir``, ``os.fsync`` and ``os.replace`` calls under ``root``, in order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._calls: list[tuple[str, str | int]] = []

    def record(self, call: str, target: str | int) -> None:
        self._calls.append((call, target))

    def _name(self, inode: int) -> str:
        for path in [self.root, *self.root.rglob("*")]:
            if path.stat().st_ino == inode:
                return path.relative_to(self.root).as_posix()
        return f"inode {inode} (gone)"

    def calls(self) -> list[tuple[str, str]]:
        """Each call and its path relative to ``root``; ``"."`` is ``root`` itself.

        An fsync is named by the inode it flushed, looked up now: a temporary file that
        was renamed since shows under its final name.
        """
        return [
            (call, self._name(target) if isinstance(target, int) else target)
            for call, target in self._calls
        ]

    def fsynced(self) -> list[str]:
        return [target for call, target in self.calls() if call == "fsync"]


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CallLog:
    """Record what the code under test creates, flushes and renames in ``tmp_path``."""
    log = CallLog(tmp_path)
    real_fsync, real_mkdir, real_replace = os.fsync, os.mkdir, os.replace

    def relative(path: Any) -> str:
        return Path(path).relative_to(tmp_path).as_posix()

    def fsync(fd: int) -> None:
        log.record("fsync", os.fstat(fd).st_ino)
        real_fsync(fd)

    def mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        log.record("mkdir", relative(path))
        real_mkdir(path, mode, **kwargs)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        log.record("replace", relative(dst))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "replace", replace)
    return log
