"""Durable private files and directories: the one implementation every hefl store uses.

Guarantees, each checked by ``tests/durable``:

- directories are created mode 0700 whatever the umask and fsync'd into their parent;
  an existing one is refused if it is not a directory, belongs to another user or others
  may write in it, and tightened to 0700 if others may only read it;
- files are created mode 0600 whatever the umask (``O_CLOEXEC``, ``fchmod``), and a new
  file is fsync'd into its directory;
- ``write_atomic`` writes a temporary file, fsyncs it, renames it over the target and
  fsyncs the directory; a failed write leaves no temporary file and the old content
  (``durable=False``: no fsync, for a cache whose reader takes a torn file for none);
- ``read_private`` refuses a file others may read, rather than using a leaked secret.

Pure standard library.
"""

from hefl_durable._dirs import DIR_MODE, fsync_dir, make_private_dir
from hefl_durable._errors import UnsafePathError
from hefl_durable._files import (
    FILE_MODE,
    Writer,
    open_append,
    open_private,
    read_private,
    remove,
    truncate,
    write_atomic,
    write_atomic_with,
)

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "UnsafePathError",
    "Writer",
    "fsync_dir",
    "make_private_dir",
    "open_append",
    "open_private",
    "read_private",
    "remove",
    "truncate",
    "write_atomic",
    "write_atomic_with",
]
