"""Shards: where the model's ciphertexts live, in this process or split across workers."""

from __future__ import annotations

import crypto
from fl_server.shards._base import (
    STREAM_ABOVE,
    BlockBytes,
    BlockList,
    BlockSource,
    ModelBlocks,
    NoiseDraws,
    ShardBackend,
    ShardDiedError,
    ShardError,
    Staged,
)
from fl_server.shards._memory import InProcessBackend
from fl_server.shards._process import ProcessBackend

__all__ = [
    "STREAM_ABOVE",
    "BlockBytes",
    "BlockList",
    "BlockSource",
    "InProcessBackend",
    "ModelBlocks",
    "NoiseDraws",
    "ProcessBackend",
    "ShardBackend",
    "ShardDiedError",
    "ShardError",
    "Staged",
    "open_backend",
]


def open_backend(shards: int, cipher: crypto.ServerCipher, public_context: bytes) -> ShardBackend:
    """``shards`` worker processes (``ProcessBackend``) for the keyless ``public_context``,
    or ``cipher`` (of that context) in this process if ``shards`` is 0."""
    if shards == 0:
        return InProcessBackend(cipher)
    return ProcessBackend(public_context, cipher.profile, shards)
