"""Private files: atomic replacement, fsync'd appends and truncation, refusal of loose secrets."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from hefl_durable._dirs import fsync_dir
from hefl_durable._errors import UnsafePathError

__all__ = [
    "FILE_MODE",
    "Writer",
    "open_append",
    "open_private",
    "read_private",
    "remove",
    "truncate",
    "write_atomic",
    "write_atomic_with",
]

T = TypeVar("T")

FILE_MODE = 0o600


def _open(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        # Whatever the umask, and tightened if it was looser: these files are this user's alone.
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: Path, flags: int) -> int:
    """Open or create ``path`` with mode 0600 and return the file descriptor.

    A file this call creates is fsync'd into its directory, so it outlives a power cut;
    an existing one is tightened to 0600.

    Parameters
    ----------
    path
        The file.
    flags
        ``os.O_RDWR``, ``os.O_WRONLY | os.O_APPEND``, ...; ``O_CREAT`` is implied and
        ``O_CLOEXEC`` added.
    """
    flags &= ~(os.O_CREAT | os.O_EXCL)
    try:
        fd = _open(path, flags | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return _open(path, flags)
    try:
        fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: Path) -> BinaryIO:
    """``path`` opened for appending, created private if missing (see ``open_private``).

    The caller flushes and fsyncs what it writes before it counts as durable.
    """
    return os.fdopen(open_private(path, os.O_WRONLY | os.O_APPEND), "ab")


class Writer(Protocol):
    """Where ``write_atomic_with`` has its content written, piece by piece."""

    def write(self, data: bytes, /) -> int: ...


class _FdWriter:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes, /) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        return len(data)


def write_atomic(path: Path, *parts: bytes, durable: bool = True) -> None:
    """Replace ``path`` by the concatenation of ``parts``: a crash leaves the old or the new.

    The parts go to a private temporary file beside ``path`` (mode 0600 whatever the
    umask), which is fsync'd and renamed over ``path``; then the directory is fsync'd. When
    this returns the new content is on disk under its name. On any failure, even an
    interruption, the temporary file is removed and ``path`` keeps its old content.

    ``durable=False`` skips both fsyncs, for a cache that can be rebuilt: a killed process
    still leaves the old or the new content, but a power cut may leave neither intact, so
    its reader must take a torn file for a missing one.
    """

    def write(f: Writer) -> None:
        for part in parts:
            f.write(part)

    write_atomic_with(path, write, durable=durable)


def write_atomic_with(path: Path, write: Callable[[Writer], T], *, durable: bool = True) -> T:
    """``write_atomic`` of what ``write`` writes into the file it is given, piece by piece
    (a large file is never held whole); what ``write`` returns."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        try:
            result = write(_FdWriter(fd))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return result


def read_private(path: Path) -> bytes:
    """The content of ``path``, a file only this user may read.

    Raises
    ------
    UnsafePathError
        Others may read or write it (``chmod 600`` is the fix the message names).
    FileNotFoundError
        It does not exist.
    """
    with open(path, "rb") as f:
        # Checked on the open file, not the name, so that what is read is what was checked.
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            # like ssh: a secret others can read is already compromised; do not use it silently
            raise UnsafePathError(
                path, f"is accessible to other users (mode {mode:o}); run: chmod 600 {path}"
            )
        return f.read()


def remove(path: Path, *, durable: bool = True) -> None:
    """Delete ``path`` if it exists, durably (its directory is fsync'd) unless
    ``durable=False``: a power cut may then bring the file back."""
    path.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes, durably (the file is fsync'd)."""
    with open(path, "r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())
