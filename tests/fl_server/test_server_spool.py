"""An update body is spooled to a nameless file as it arrives and read back block by block."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

import crypto
from fl_server.spool import UpdateSpool

FP = bytes(range(32))
LIMITS = crypto.EnvelopeLimits(n_blocks=8, max_block_bytes=5000, expected_fingerprint=FP)


def _envelope() -> bytes:
    blocks = tuple(crypto.CipherBlock(i, bytes([i]) * (1000 * i + 7)) for i in (1, 2, 4))
    return crypto.update_to_bytes(crypto.EncryptedUpdate(FP, 3, 1, uuid.UUID(int=5), blocks))


def test_a_spooled_update_reads_back_block_by_block(tmp_path: Path) -> None:
    # Prepare
    data = _envelope()
    spool = UpdateSpool(LIMITS, tmp_path)

    # Execute: the body in uneven pieces
    for at in range(0, len(data), 777):
        spool.write(data[at : at + 777])
    head = spool.finish()

    # Assert
    assert (head.base_version, head.key_epoch, head.update_id) == (3, 1, uuid.UUID(int=5))
    assert head.blocks == ()
    assert list(spool.blocks()) == [(i, bytes([i]) * (1000 * i + 7)) for i in (1, 2, 4)]
    assert b"".join(spool.chunks()) == data
    assert spool.digest() == hashlib.sha256(data).digest()
    assert list(tmp_path.iterdir()) == []  # the file has no name: nothing to clean up
    spool.close()


def test_a_malformed_body_is_refused_as_it_arrives(tmp_path: Path) -> None:
    data = bytearray(_envelope())
    data[72] = 9  # the first block's index (after the 72-byte head): out of range
    spool = UpdateSpool(LIMITS, tmp_path)

    with pytest.raises(crypto.BlockIndexError):
        spool.write(bytes(data[:100]))
    spool.close()


def test_a_body_cut_short_is_refused_when_it_ends(tmp_path: Path) -> None:
    spool = UpdateSpool(LIMITS, tmp_path)
    spool.write(_envelope()[:-1])

    with pytest.raises(crypto.EnvelopeTruncatedError):
        spool.finish()
    spool.close()
