"""Private files: atomic replacement, fsync'd appends, refusal of a secret others can read."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hefl_durable import (
    UnsafePathError,
    open_append,
    open_private,
    read_private,
    remove,
    truncate,
    write_atomic,
)
from tests.durable.conftest import CallLog


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# write_atomic


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277])
def test_write_atomic_writes_every_part_mode_0600_whatever_the_umask(
    tmp_path: Path, umask: Callable[[int], int], mask: int
) -> None:
    umask(mask)
    path = tmp_path / "key"

    write_atomic(path, b"head|", b"", b"body" * 1000)

    assert path.read_bytes() == b"head|" + b"body" * 1000
    assert _mode(path) == 0o600


def test_write_atomic_replaces_a_loose_file_by_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"old")
    path.chmod(0o644)

    write_atomic(path, b"new")

    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_write_atomic_syncs_the_file_renames_it_then_syncs_the_directory(
    tmp_path: Path, calls: CallLog
) -> None:
    write_atomic(tmp_path / "key", b"data")

    # The fsync'd temporary file is the inode now named "key".
    assert calls.calls() == [("fsync", "key"), ("replace", "key"), ("fsync", ".")]


def test_write_atomic_not_durable_renames_without_a_sync(tmp_path: Path, calls: CallLog) -> None:
    (tmp_path / "cache").write_bytes(b"old")

    write_atomic(tmp_path / "cache", b"new", durable=False)

    assert calls.calls() == [("replace", "cache")]
    assert (tmp_path / "cache").read_bytes() == b"new"
    assert _mode(tmp_path / "cache") == 0o600


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))

    write_atomic(tmp_path / "key", b"0123456789", b"abcdefg")

    assert (tmp_path / "key").read_bytes() == b"0123456789abcdefg"


def _fail_write(monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    written: list[int] = []

    def write(fd: int, data: Any) -> int:
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(real_write(fd, bytes(data[:4])))
        return written[0]

    monkeypatch.setattr(os, "write", write)


def _fail(name: str, error: BaseException) -> Callable[[pytest.MonkeyPatch], None]:
    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        def fail(*args: Any, **kwargs: Any) -> None:
            raise error

        monkeypatch.setattr(os, name, fail)

    return install


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (_fail_write, OSError),  # disk full half-way
        (_fail("fsync", OSError(errno.EIO, "I/O error")), OSError),
        (_fail("fsync", KeyboardInterrupt()), KeyboardInterrupt),
        (_fail("replace", OSError(errno.EXDEV, "cross-device")), OSError),
    ],
    ids=["write", "fsync", "interrupted", "rename"],
)
def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: Callable[[pytest.MonkeyPatch], None],
    error: type[BaseException],
) -> None:
    # Prepare
    path = tmp_path / "key"
    write_atomic(path, b"old content")
    failure(monkeypatch)

    # Execute
    with pytest.raises(error):
        write_atomic(path, b"new content, longer than the old")
    monkeypatch.undo()

    # Assert
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


# open_private and open_append


@pytest.mark.parametrize("mask", [0o000, 0o277])
def test_open_append_creates_a_file_0600_whatever_the_umask(
    tmp_path: Path, umask: Callable[[int], int], mask: int
) -> None:
    umask(mask)

    with open_append(tmp_path / "log") as f:
        f.write(b"one\n")

    assert _mode(tmp_path / "log") == 0o600


def test_open_append_appends_and_syncs_the_directory_only_when_it_creates(
    tmp_path: Path, calls: CallLog
) -> None:
    with open_append(tmp_path / "log") as f:
        f.write(b"one\n")
    created = calls.fsynced()

    with open_append(tmp_path / "log") as f:
        f.write(b"two\n")

    assert (tmp_path / "log").read_bytes() == b"one\ntwo\n"
    assert created == ["."]
    assert calls.fsynced() == ["."]


def test_open_private_tightens_an_existing_loose_file(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_bytes(b"kept")
    path.chmod(0o664)

    os.close(open_private(path, os.O_RDWR | os.O_CREAT | os.O_EXCL))

    assert _mode(path) == 0o600
    assert path.read_bytes() == b"kept"


# read_private


def test_read_private_reads_a_private_file(tmp_path: Path) -> None:
    write_atomic(tmp_path / "secret", b"s3cret")

    assert read_private(tmp_path / "secret") == b"s3cret"
    with pytest.raises(FileNotFoundError):
        read_private(tmp_path / "missing")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666])
def test_read_private_refuses_a_file_others_can_reach(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    write_atomic(path, b"s3cret")
    path.chmod(mode)

    with pytest.raises(UnsafePathError, match=f"accessible to other users \\(mode {mode:o}\\)"):
        read_private(path)

    assert _mode(path) == mode  # not silently fixed: it may have been read already


def test_read_private_checks_the_file_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mode comes from the open file, not a second lookup of the name.
    path = tmp_path / "secret"
    write_atomic(path, b"s3cret")
    path.chmod(0o644)
    monkeypatch.setattr(Path, "stat", lambda self, **kw: os.stat(tmp_path))

    with pytest.raises(UnsafePathError):
        read_private(path)


# remove and truncate


def test_remove_deletes_and_syncs_the_directory(tmp_path: Path, calls: CallLog) -> None:
    (tmp_path / "gone").write_bytes(b"x")

    remove(tmp_path / "gone")
    remove(tmp_path / "never-there")

    assert list(tmp_path.iterdir()) == []
    assert calls.fsynced() == [".", "."]


def test_remove_not_durable_deletes_without_a_sync(tmp_path: Path, calls: CallLog) -> None:
    (tmp_path / "gone").write_bytes(b"x")

    remove(tmp_path / "gone", durable=False)

    assert list(tmp_path.iterdir()) == []
    assert calls.fsynced() == []


def test_truncate_cuts_and_syncs_the_file(tmp_path: Path, calls: CallLog) -> None:
    (tmp_path / "log").write_bytes(b"whole\ntorn")

    truncate(tmp_path / "log", 6)

    assert (tmp_path / "log").read_bytes() == b"whole\n"
    assert calls.fsynced() == ["log"]
