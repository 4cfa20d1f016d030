"""A published model is served block by block: the same bytes, never joined whole."""

from __future__ import annotations

import crypto
from fl_server.snapshot import ModelSnapshot

FP = bytes(range(32))


def _snapshot() -> ModelSnapshot:
    blocks = tuple(bytes([i]) * (1000 + i) for i in range(40))
    return ModelSnapshot("job-0123456789abcdef", FP, 3, 9, blocks, tuple(i % 10 for i in range(40)))


def _expected(snapshot: ModelSnapshot, indices: list[int]) -> bytes:
    blocks = tuple(crypto.CipherBlock(i, snapshot.blocks[i]) for i in indices)
    return crypto.model_to_bytes(crypto.EncryptedModel(FP, 9, 3, blocks))


def test_the_streamed_envelope_is_the_envelope_and_its_length_is_known_first() -> None:
    snapshot = _snapshot()

    body = snapshot.envelope()
    chunks = list(body.chunks(size=4096))

    assert b"".join(chunks) == _expected(snapshot, list(range(40)))
    assert body.length == len(b"".join(chunks))
    assert len(chunks) > 5  # pieces of about 4 kB, never one body
    assert max(len(c) for c in chunks) < 4096 + 1040 + 8


def test_changed_blocks_only_stream_the_same_bytes_as_before() -> None:
    snapshot = _snapshot()

    body = snapshot.envelope(since=6)

    changed = [i for i in range(40) if i % 10 > 6]
    assert list(body.indices) == changed
    assert snapshot.to_bytes(6) == _expected(snapshot, changed)
    assert body.length == len(snapshot.to_bytes(6))
