"""The checkpoint file format: a checksummed head, JSON metadata, then the model blocks.

``magic "HCKP" | format u32 | meta length u64 | body length u64 | SHA-256 of the rest |
meta JSON | blocks``; the meta holds the version, seq, block sizes and bookkeeping state.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import hefl_durable
from fl_server.errors import StateError
from fl_server.store._records import Checkpoint

__all__ = ["checkpoint_from_bytes", "checkpoint_to_parts", "write_checkpoint_file"]

_CKPT_MAGIC = b"HCKP"
_CKPT_FORMAT = 1
_CKPT_HEAD = struct.Struct("<4sIQQ32s")  # magic, format, meta length, body length, sha256


def _sizes(blocks: Sequence[bytes]) -> list[int]:
    # A published model's blocks (fl_server.snapshot.PublishedBlocks) are in files: their
    # sizes are known without reading them.
    size = getattr(blocks, "size", None)
    return [size(i) for i in range(len(blocks))] if size else [len(b) for b in blocks]


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


def checkpoint_from_bytes(data: bytes, path: Path) -> Checkpoint:
    """The checkpoint ``data`` holds; ``StateError`` naming ``path`` if it is damaged."""
    if len(data) < _CKPT_HEAD.size:
        raise StateError(f"{path} is cut short")
    magic, fmt, meta_len, body_len, digest = _CKPT_HEAD.unpack_from(data)
    if magic != _CKPT_MAGIC or fmt != _CKPT_FORMAT:
        raise StateError(f"{path} is not a checkpoint of this format")
    rest = memoryview(data)[_CKPT_HEAD.size :]
    if len(rest) != meta_len + body_len or hashlib.sha256(rest).digest() != digest:
        raise StateError(f"{path} fails its SHA-256: the checkpoint is damaged")
    try:
        meta = json.loads(bytes(rest[:meta_len]))
        sizes = [int(s) for s in meta["block_sizes"]]
        version, seq, state = int(meta["version"]), int(meta["seq"]), meta["state"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{path} has unreadable metadata: {exc!r}") from exc
    if sum(sizes) != body_len:
        raise StateError(f"{path}: block sizes do not add up to the body")
    blocks, offset = [], meta_len
    for size in sizes:
        blocks.append(bytes(rest[offset : offset + size]))
        offset += size
    return Checkpoint(version=version, seq=seq, blocks=tuple(blocks), state=state)
