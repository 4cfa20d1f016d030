"""Private directories: created mode 0700 and fsync'd into their parent, refused if unsafe."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from hefl_durable._errors import UnsafePathError

__all__ = ["DIR_MODE", "fsync_dir", "make_private_dir"]

logger = logging.getLogger("hefl_durable")

DIR_MODE = 0o700


def fsync_dir(path: Path) -> None:
    """Flush the entries of directory ``path`` (files created, renamed or removed in it).

    Raises
    ------
    NotADirectoryError
        ``path`` is not a directory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path) -> bool:
    """Create ``path`` and its missing parents; whether ``path`` itself was created here.

    The parent of each new directory is fsync'd: without it a power cut can lose the new
    entry, and with it everything written inside.
    """
    missing: list[Path] = []
    cursor = path
    while not os.path.lexists(cursor):
        missing.append(cursor)
        cursor = cursor.parent
    created = False
    for directory in reversed(missing):
        try:
            # Missing parents get the default mode, as ``mkdir -p`` gives them.
            os.mkdir(directory, DIR_MODE if directory == path else 0o777)
        except FileExistsError:
            continue  # made meanwhile by another process: checked below like any other
        fsync_dir(directory.parent)
        created = directory == path
    return created


def make_private_dir(path: Path) -> None:
    """Make ``path`` a directory that only this user can enter.

    A missing ``path`` is created with mode 0700 whatever the umask (missing parents as
    ``mkdir -p`` creates them), and each new directory is fsync'd into its parent. An
    existing one that others may only read or enter is tightened to 0700, with a warning.

    Parameters
    ----------
    path
        The directory; symbolic links are followed.

    Raises
    ------
    UnsafePathError
        ``path`` is not a directory, belongs to another user, or others may write in it.
    OSError
        It cannot be created or inspected.
    """
    if _create(path):
        os.chmod(path, DIR_MODE)  # exactly 0700: a umask such as 0o277 would leave it unusable
        return
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(path, "is not a directory")
    if info.st_uid != os.geteuid():
        # Its owner can read and replace whatever is kept here, and chmod is theirs alone.
        raise UnsafePathError(path, "belongs to another user")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        # Others may already have planted or swapped files in it: tightening cannot undo that.
        raise UnsafePathError(
            path, f"is writable by other users (mode {mode:o}); run: chmod 700 {path}"
        )
    if mode & 0o077:
        logger.warning("tightening permissions of %s from %o to 0700", path, mode)
        os.chmod(path, DIR_MODE)
