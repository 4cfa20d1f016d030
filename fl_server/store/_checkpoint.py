"""The checkpoint file format: a checksummed head, JSON metadata, then the model blocks.

``magic "HCKP" | format u32 | meta length u64 | body length u64 | SHA-256 of the rest |
meta JSON | blocks``; the meta holds the version, seq, block sizes and bookkeeping state.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import hefl_durable
from fl_server.errors import StateError
from fl_server.store._records import Checkpoint, FileBlocks

__all__ = [
    "checkpoint_from_file",
    "checkpoint_to_parts",
    "write_checkpoint_file",
]

_CHUNK = 1 << 20

_CKPT_MAGIC = b"HCKP"
_CKPT_FORMAT = 1
_CKPT_HEAD = struct.Struct("<4sIQQ32s")  # magic, format, meta length, body length, sha256


def _sizes(blocks: Sequence[bytes]) -> list[int]:
    if isinstance(blocks, FileBlocks):  # their sizes are known without reading them
        return [blocks.size(i) for i in range(len(blocks))]
    return [len(b) for b in blocks]


def checkpoint_to_parts(checkpoint: Checkpoint) -> Iterator[bytes]:
    """The file's bytes in parts (head, meta, each block), so no copy joins the blocks;
    the blocks are read twice (for the checksum in the head, then to be written), one at
    a time, never held all at once."""
    sizes = _sizes(checkpoint.blocks)
    meta = json.dumps(
        {
            "version": checkpoint.version,
            "seq": checkpoint.seq,
            "block_sizes": sizes,
            "state": checkpoint.state,
        }
    ).encode()
    hasher = hashlib.sha256(meta)
    for block in checkpoint.blocks:
        hasher.update(block)
    yield _CKPT_HEAD.pack(_CKPT_MAGIC, _CKPT_FORMAT, len(meta), sum(sizes), hasher.digest())
    yield meta
    yield from checkpoint.blocks


def write_checkpoint_file(path: Path, checkpoint: Checkpoint) -> None:
    """Replace ``path`` by ``checkpoint`` atomically, written part by part."""

    def write(f: hefl_durable.Writer) -> None:
        for part in checkpoint_to_parts(checkpoint):
            f.write(part)

    hefl_durable.write_atomic_with(path, write)


class _CheckpointBlocks(FileBlocks):
    """A checkpoint's blocks, read from its file when asked (the file stays open while
    they are: an atomic replacement of the checkpoint does not change them)."""

    def __init__(self, fd: int, offsets: Sequence[int], sizes: Sequence[int]) -> None:
        self._fd = fd
        self._close = weakref.finalize(self, os.close, fd)
        self._offsets, self._sizes = tuple(offsets), tuple(sizes)

    def __len__(self) -> int:
        return len(self._sizes)

    def read(self, index: int) -> bytes:
        return os.pread(self._fd, self._sizes[index], self._offsets[index])

    def size(self, index: int) -> int:
        return self._sizes[index]


def checkpoint_from_file(path: Path) -> Checkpoint | None:
    """The checkpoint in ``path`` (``None`` if there is none), its checksum verified as it
    is read in pieces; its blocks stay in the file (read when asked). ``StateError``
    naming ``path`` if it is damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        head = os.pread(fd, _CKPT_HEAD.size, 0)
        if len(head) < _CKPT_HEAD.size:
            raise StateError(f"{path} is cut short")
        magic, fmt, meta_len, body_len, digest = _CKPT_HEAD.unpack(head)
        if magic != _CKPT_MAGIC or fmt != _CKPT_FORMAT:
            raise StateError(f"{path} is not a checkpoint of this format")
        hasher, offset = hashlib.sha256(), _CKPT_HEAD.size
        while piece := os.pread(fd, _CHUNK, offset):
            hasher.update(piece)
            offset += len(piece)
        if offset - _CKPT_HEAD.size != meta_len + body_len or hasher.digest() != digest:
            raise StateError(f"{path} fails its SHA-256: the checkpoint is damaged")
        try:
            meta = json.loads(os.pread(fd, meta_len, _CKPT_HEAD.size))
            sizes = [int(s) for s in meta["block_sizes"]]
            version, seq, state = int(meta["version"]), int(meta["seq"]), meta["state"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{path} has unreadable metadata: {exc!r}") from exc
        if sum(sizes) != body_len:
            raise StateError(f"{path}: block sizes do not add up to the body")
    except BaseException:
        os.close(fd)
        raise
    offsets, offset = [], _CKPT_HEAD.size + meta_len
    for size in sizes:
        offsets.append(offset)
        offset += size
    blocks = _CheckpointBlocks(fd, offsets, sizes)
    return Checkpoint(version=version, seq=seq, blocks=blocks, state=state)
