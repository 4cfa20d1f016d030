"""A published model is served block by block: the same bytes, never joined whole."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import crypto
from fl_server.snapshot import BlockWriter, ModelSnapshot, PublishedBlocks

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


def test_published_blocks_in_files_stream_what_blocks_in_memory_stream(tmp_path: Path) -> None:
    # Prepare
    held = _snapshot()
    in_files = replace(held, blocks=PublishedBlocks.of(held.blocks, tmp_path))

    # Execute
    body = in_files.envelope(since=3)

    # Assert: the same envelope, its length known from the sizes alone
    assert b"".join(body.chunks(size=4096)) == held.to_bytes(3)
    assert body.length == held.envelope(since=3).length
    assert in_files.blocks == held.blocks
    assert not list(tmp_path.iterdir())  # anonymous files: nothing left behind by name


def test_a_download_in_progress_keeps_its_version_while_new_ones_are_published(
    tmp_path: Path,
) -> None:
    # Prepare: a version being downloaded, then dense and sparse publishes after it
    writer = BlockWriter(PublishedBlocks.of([b"a" * 100] * 8, tmp_path), tmp_path)
    downloading = writer.base
    versions = []

    # Execute
    for version in range(1, 30):
        changed = range(8) if version % 10 == 0 else [version % 8]
        for index in changed:
            writer.write(index, bytes([version]) * 100)
        versions.append(writer.publish())

    # Assert: the old version reads as it was; the newest has every newest block; the
    # files hold at most twice the model (replaced blocks are compacted away)
    assert downloading == [b"a" * 100] * 8
    newest = versions[-1]
    assert newest[29 % 8] == bytes([29]) * 100
    assert newest[0] == bytes([24]) * 100
    assert all(v.held_bytes <= 2 * v.nbytes for v in versions)
