"""The published model: an immutable serialized version that any thread may serve.

Its blocks live in files, not in memory (``PublishedBlocks``): anonymous files in the
job's directory, each closed (and so gone) once no published version or download in
progress refers to it. Publishing writes the changed blocks into a new file, block by
block; the unchanged ones stay where they are.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import crypto
from fl_server.errors import VersionAheadError
from fl_server.store import FileBlocks

__all__ = ["BlockWriter", "EnvelopeBody", "ModelSnapshot", "PublishedBlocks", "ReceivedModel"]

_CHUNK = 1 << 20


class _Segment:
    """An anonymous file of serialized blocks, appended to, read by offset; closed (its
    space freed) when the last ``PublishedBlocks`` referring to it goes."""

    def __init__(self, directory: Path | None) -> None:
        file = tempfile.TemporaryFile(dir=directory, buffering=0)  # noqa: SIM115 - finalized
        self._fd = file.fileno()
        self._close = weakref.finalize(self, file.close)
        self.size = 0

    def append(self, data: bytes) -> int:
        """Write ``data`` at the end; its offset."""
        offset, view = self.size, memoryview(data)
        while view:
            view = view[os.pwrite(self._fd, view, offset + len(data) - len(view)) :]
        self.size += len(data)
        return offset

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)


# Where one block's bytes are: its file, offset and length.
_Entry = tuple[_Segment, int, int]


class PublishedBlocks(FileBlocks):
    """A published model's serialized blocks, in files: immutable; a block is read when
    it is asked for, never held."""

    def __init__(self, entries: Sequence[_Entry]) -> None:
        self._entries = tuple(entries)

    @classmethod
    def of(cls, blocks: Iterable[bytes], directory: Path | None) -> PublishedBlocks:
        """``blocks`` written into a new file in ``directory``."""
        writer = BlockWriter(cls(()), directory)
        for index, data in enumerate(blocks):
            writer.write(index, data)
        return writer.publish()

    def __len__(self) -> int:
        return len(self._entries)

    def read(self, index: int) -> bytes:
        segment, offset, length = self._entries[index]
        return segment.read(offset, length)

    def size(self, index: int) -> int:
        """The length of block ``index``, without reading it."""
        return self._entries[index][2]

    @property
    def held_bytes(self) -> int:
        """The bytes of every file these blocks are in (live blocks and replaced ones)."""
        return sum(s.size for s in {id(e[0]): e[0] for e in self._entries}.values())

    @property
    def nbytes(self) -> int:
        return sum(e[2] for e in self._entries)


class BlockWriter:
    """Builds the next ``PublishedBlocks`` from the last: changed blocks go, one at a time,
    into a new file as they are serialized; ``publish`` swaps them in.

    When the files the blocks are in hold more than twice the model (blocks replaced in
    some of them), ``publish`` copies the others into the new file, block by block, so
    the files of the old ones can go once nothing reads them.
    """

    def __init__(self, base: PublishedBlocks, directory: Path | None) -> None:
        self._base = base
        self._directory = directory
        self._segment: _Segment | None = None
        self._fresh: dict[int, _Entry] = {}

    @property
    def base(self) -> PublishedBlocks:
        """The blocks last published."""
        return self._base

    def write(self, index: int, data: bytes) -> None:
        """The newest bytes of block ``index`` (replacing any written since ``publish``)."""
        if self._segment is None:
            self._segment = _Segment(self._directory)
        self._fresh[index] = (self._segment, self._segment.append(data), len(data))

    def publish(self) -> PublishedBlocks:
        """The last published blocks with those written since: the next version's."""
        entries = list(self._base._entries)
        n = max(len(entries), max(self._fresh, default=-1) + 1)
        if n > len(entries):
            if set(range(len(entries), n)) - set(self._fresh):
                raise ValueError("a published model needs every block")
            entries += [None] * (n - len(entries))  # type: ignore[list-item]
        for index, entry in self._fresh.items():
            entries[index] = entry
        blocks = PublishedBlocks(entries)
        if self._segment is not None and blocks.held_bytes > 2 * blocks.nbytes:
            for index, (segment, offset, length) in enumerate(entries):
                if segment is not self._segment:
                    entries[index] = (
                        self._segment,
                        self._segment.append(segment.read(offset, length)),
                        length,
                    )
            blocks = PublishedBlocks(entries)
        self._base, self._segment, self._fresh = blocks, None, {}
        return blocks


@dataclass(frozen=True)
class ReceivedModel:
    """A client's model envelope as it was received: its head, and every block written to a
    file as it arrived (an initial model: it becomes the published version 0 as it is)."""

    fingerprint: bytes
    version: int
    key_epoch: int
    blocks: PublishedBlocks = field(repr=False)


@dataclass(frozen=True)
class EnvelopeBody:
    """A model envelope to send piece by piece, never joined whole: its head, then the
    blocks at ``indices`` of ``blocks``. Its ``length`` is known before the first byte."""

    head: bytes
    blocks: Sequence[bytes] = field(repr=False)
    indices: Sequence[int]

    @property
    def length(self) -> int:
        block_header = crypto.ENVELOPE_HEADERS.block.size
        size = self.blocks.size if isinstance(self.blocks, FileBlocks) else None
        return len(self.head) + sum(
            block_header + (size(i) if size else len(self.blocks[i])) for i in self.indices
        )

    def __len__(self) -> int:
        return self.length

    def chunks(self, size: int = _CHUNK) -> Iterator[bytes]:
        """The envelope's bytes in pieces of about ``size`` bytes (whole blocks each)."""
        parts, held = [self.head], len(self.head)
        for i in self.indices:
            piece = crypto.cipher_block_to_bytes(crypto.CipherBlock(i, self.blocks[i]))
            parts.append(piece)
            held += len(piece)
            if held >= size:
                yield b"".join(parts)
                parts, held = [], 0
        if parts:
            yield b"".join(parts)


@dataclass(frozen=True)
class ModelSnapshot:
    """The serialized model at one version: immutable, so any thread may serve it.

    ``blocks`` are in files (``PublishedBlocks``; any sequence of bytes in tests), kept
    while this snapshot is: a download in progress keeps its version whatever is published
    meanwhile. ``block_versions[i]`` is the version at which block ``i`` last changed.
    """

    job_id: str
    fingerprint: bytes
    key_epoch: int
    version: int
    blocks: Sequence[bytes] = field(repr=False)
    block_versions: tuple[int, ...] = field(repr=False)

    @property
    def etag(self) -> str:
        """Names the model version: a client holding it needs nothing, whatever it asked."""
        return f'"{self.job_id[:16]}-{self.version}"'

    def changed_since(self, since: int) -> list[int]:
        """Indices of the blocks that changed after version ``since``."""
        if since > self.version:
            raise VersionAheadError(
                f"version {since} is ahead of the model (version {self.version})",
                current_version=self.version,
            )
        return [i for i, v in enumerate(self.block_versions) if v > since]

    def envelope(self, since: int | None = None) -> EnvelopeBody:
        """The model envelope, to stream: every block, or only those changed after ``since``.

        It refers to this snapshot's blocks: no copy of the model is made to serve it.
        """
        indices = range(len(self.blocks)) if since is None else self.changed_since(since)
        head = crypto.model_head_to_bytes(
            self.fingerprint, self.version, self.key_epoch, len(indices)
        )
        return EnvelopeBody(head, self.blocks, indices)

    def to_bytes(self, since: int | None = None) -> bytes:
        """The model envelope, whole: every block, or only those changed after ``since``."""
        return b"".join(self.envelope(since).chunks())
