"""An update body spooled to a file as it arrives, its envelope checked on the way.

The server never holds an update whole: the body goes to an anonymous file in the job's
directory chunk by chunk while ``crypto.EnvelopeParser`` checks its head and every block
header (fingerprint, indices strictly increasing and in range, lengths) with no
ciphertext work. The queued update is that file and the offsets of its blocks; the apply
worker reads the blocks back one at a time, and the journal copies the file into the
log. The file has no name: it is gone when closed, and when the process dies.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import crypto

__all__ = ["SpooledBlocks", "UpdateSpool"]

_CHUNK = 1 << 20
_HEAD = crypto.ENVELOPE_HEADERS.prefix.size + crypto.ENVELOPE_HEADERS.update.size
_BLOCK_HEAD = crypto.ENVELOPE_HEADERS.block.size


class UpdateSpool:
    """One update envelope on its way in: written by ``write``, read back by offsets.

    Parameters
    ----------
    limits
        What the envelope may hold (the job's layout).
    directory
        Where the anonymous file goes (the job's directory); ``None``: the system's
        temporary directory.

    ``write`` and ``finish`` raise ``crypto.CryptoError`` for a malformed envelope, as soon
    as the bytes that show it have arrived. After ``finish`` any thread may read.
    """

    def __init__(self, limits: crypto.EnvelopeLimits, directory: Path | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by close()
        self._parser = crypto.EnvelopeParser("update", limits)
        self._offsets: list[tuple[int, int, int]] = []  # block index, data offset, length
        self._next = _HEAD
        self._head: crypto.EnvelopeHead | None = None

    @property
    def size(self) -> int:
        """Bytes received so far (the envelope's length once finished)."""
        return self._parser.size

    def write(self, chunk: bytes) -> None:
        """Take the next bytes of the body."""
        for block in self._parser.feed(chunk):
            length = len(block.data)
            self._offsets.append((block.index, self._next + _BLOCK_HEAD, length))
            self._next += _BLOCK_HEAD + length
        self._file.write(chunk)

    def finish(self) -> crypto.EncryptedUpdate:
        """The update's head, as an update without its blocks, once the body is complete."""
        self._head = head = self._parser.close()
        self._file.flush()
        assert head.update_id is not None
        return crypto.EncryptedUpdate(
            head.fingerprint, head.version, head.key_epoch, head.update_id, ()
        )

    @property
    def update_id(self) -> uuid.UUID | None:
        return None if self._head is None else self._head.update_id

    def blocks(self) -> Iterator[tuple[int, bytes]]:
        """The update's blocks, ``(index, ciphertext)``, read from the file one at a time."""
        fd = self._file.fileno()
        for index, offset, length in self._offsets:
            yield index, os.pread(fd, length, offset)

    def reopen(self) -> SpooledBlocks:
        """The update's blocks, readable by position until the reader is closed, even
        after the spool is (the shards read a large update twice: to check it, to add it)."""
        return SpooledBlocks(self._file.fileno(), self._offsets)

    def chunks(self) -> Iterator[bytes]:
        """The envelope's bytes, in pieces of about 1 MiB."""
        fd = self._file.fileno()
        for offset in range(0, self.size, _CHUNK):
            yield os.pread(fd, min(_CHUNK, self.size - offset), offset)

    def digest(self) -> bytes:
        """The envelope's SHA-256."""
        sha = hashlib.sha256()
        for piece in self.chunks():
            sha.update(piece)
        return sha.digest()

    def close(self) -> None:
        """Drop the file (the update was logged, refused or abandoned)."""
        self._file.close()


class SpooledBlocks:
    """A finished spool's blocks on a descriptor of their own (a ``shards.BlockSource``)."""

    def __init__(self, fd: int, offsets: Sequence[tuple[int, int, int]]) -> None:
        self._fd = os.dup(fd)
        self._close = weakref.finalize(self, os.close, self._fd)
        self._offsets = offsets
        self.indices = tuple(index for index, _, _ in offsets)
        self.nbytes = sum(length for _, _, length in offsets)

    def read(self, position: int) -> bytes:
        _, offset, length = self._offsets[position]
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        self._close()
