import contextlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import (
    BlockIndexError,
    CipherBlock,
    EncryptedModel,
    EncryptedUpdate,
    EnvelopeError,
    EnvelopeLimits,
    EnvelopeTooLargeError,
    EnvelopeTruncatedError,
    EnvelopeVersionError,
    LayoutMismatchError,
    model_from_bytes,
    model_to_bytes,
    update_from_bytes,
    update_to_bytes,
)

FP = bytes(range(32))
LIMITS = EnvelopeLimits(n_blocks=8, max_block_bytes=64, expected_fingerprint=FP)


def _update(indices: tuple[int, ...] = (0, 3, 7)) -> EncryptedUpdate:
    return EncryptedUpdate(
        fingerprint=FP,
        base_version=12,
        key_epoch=2,
        update_id=uuid.UUID(int=99),
        blocks=tuple(CipherBlock(i, bytes([i]) * (i + 1)) for i in indices),
    )


def test_update_round_trip() -> None:
    update = _update()
    assert update_from_bytes(update_to_bytes(update), LIMITS) == update


def test_model_round_trip_including_an_empty_subset() -> None:
    model = EncryptedModel(FP, 5, 1, (CipherBlock(2, b"abc"),))
    assert model_from_bytes(model_to_bytes(model), LIMITS) == model
    empty = EncryptedModel(FP, 5, 1, ())
    assert model_from_bytes(model_to_bytes(empty), LIMITS) == empty


def test_kinds_are_not_interchangeable() -> None:
    model = model_to_bytes(EncryptedModel(FP, 5, 1, (CipherBlock(2, b"abc"),)))
    with pytest.raises(EnvelopeError, match="expected a update"):
        update_from_bytes(model, LIMITS)
    with pytest.raises(EnvelopeError, match="expected a model"):
        model_from_bytes(update_to_bytes(_update()), LIMITS)


def test_wrong_layout_is_a_mismatch() -> None:
    data = update_to_bytes(_update())
    with pytest.raises(LayoutMismatchError):
        update_from_bytes(data, EnvelopeLimits(8, 64, expected_fingerprint=b"\1" * 32))
    # without an expected fingerprint, any layout parses
    assert update_from_bytes(data, EnvelopeLimits(8, 64)).fingerprint == FP


def test_every_truncation_is_a_truncation_error() -> None:
    data = update_to_bytes(_update())
    for cut in range(len(data)):
        with pytest.raises(EnvelopeTruncatedError):
            update_from_bytes(data[:cut], LIMITS)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(EnvelopeError, match="unexpected bytes"):
        update_from_bytes(update_to_bytes(_update()) + b"\0", LIMITS)


def test_header_fields_are_checked() -> None:
    data = bytearray(update_to_bytes(_update()))
    bad_magic = b"XXXX" + data[4:]
    with pytest.raises(EnvelopeError, match="magic"):
        update_from_bytes(bytes(bad_magic), LIMITS)
    data[4] = 2
    with pytest.raises(EnvelopeVersionError):
        update_from_bytes(bytes(data), LIMITS)
    data[4] = 1
    data[6] = 1
    with pytest.raises(EnvelopeError, match="reserved"):
        update_from_bytes(bytes(data), LIMITS)


def _raw_update(blocks: list[tuple[int, int, bytes]], count: int | None = None) -> bytes:
    head = struct.pack("<4sBBH32s", b"HEFL", 1, 2, 0, FP)
    head += struct.pack("<QI16sI", 1, 1, b"\0" * 16, len(blocks) if count is None else count)
    return head + b"".join(struct.pack("<II", i, n) + d for i, n, d in blocks)


@pytest.mark.parametrize(
    ("blocks", "count", "error", "message"),
    [
        ([(1, 1, b"a"), (1, 1, b"b")], None, BlockIndexError, "duplicated"),
        ([(3, 1, b"a"), (1, 1, b"b")], None, BlockIndexError, "unordered"),
        ([(8, 1, b"a")], None, BlockIndexError, "out of range"),
        ([], 0, BlockIndexError, "at least one"),
        ([], 9, BlockIndexError, "declared"),
        ([(0, 0, b"")], None, EnvelopeError, "empty"),
        ([(0, 65, b"a" * 65)], None, EnvelopeTooLargeError, "at most 64"),
        ([(0, 2**32 - 1, b"a")], None, EnvelopeTooLargeError, "declares"),
        ([(0, 5, b"ab")], None, EnvelopeTruncatedError, "block 0"),
    ],
)
def test_block_table_errors(
    blocks: list[tuple[int, int, bytes]], count: int | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        update_from_bytes(_raw_update(blocks, count), LIMITS)


def test_oversized_envelopes_are_refused_before_parsing() -> None:
    huge = b"\0" * (LIMITS.max_total_bytes + 1)
    with pytest.raises(EnvelopeTooLargeError):
        update_from_bytes(huge, LIMITS)


def test_writers_refuse_what_readers_would_refuse() -> None:
    with pytest.raises(BlockIndexError):
        update_to_bytes(_update((3, 1)))
    with pytest.raises(EnvelopeError):
        model_to_bytes(EncryptedModel(b"short", 1, 1, ()))
    with pytest.raises(EnvelopeError):
        model_to_bytes(EncryptedModel(FP, -1, 1, ()))


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=700))
def test_fuzz_random_bytes_raise_only_envelope_errors(data: bytes) -> None:
    for parse in (update_from_bytes, model_from_bytes):
        with contextlib.suppress(EnvelopeError, LayoutMismatchError):
            parse(data, LIMITS)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 400),
)
def test_fuzz_mutated_valid_envelopes_raise_only_envelope_errors(
    edits: list[tuple[int, int]], cut: int
) -> None:
    raw = bytearray(update_to_bytes(_update()))
    for pos, value in edits:
        if pos < len(raw):
            raw[pos] = value
    data = bytes(raw[: len(raw) - cut % 8])
    try:
        parsed = update_from_bytes(data, LIMITS)
    except (EnvelopeError, LayoutMismatchError):
        return
    # whatever parses is internally consistent
    indices = [b.index for b in parsed.blocks]
    assert indices == sorted(set(indices))
    assert all(0 <= i < LIMITS.n_blocks for i in indices)
    assert all(0 < len(b.data) <= LIMITS.max_block_bytes for b in parsed.blocks)
