"""The envelope written and parsed piece by piece: the same bytes, blocks and refusals."""

import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto import (
    CipherBlock,
    CryptoError,
    EncryptedModel,
    EncryptedUpdate,
    EnvelopeLimits,
    EnvelopeParser,
    EnvelopeTooLargeError,
    EnvelopeTruncatedError,
    cipher_block_to_bytes,
    model_head_to_bytes,
    model_to_bytes,
    update_from_bytes,
    update_head_to_bytes,
    update_to_bytes,
)

FP = bytes(range(32))
LIMITS = EnvelopeLimits(n_blocks=8, max_block_bytes=64, expected_fingerprint=FP)
UPDATE = EncryptedUpdate(
    FP, 12, 2, uuid.UUID(int=99), tuple(CipherBlock(i, bytes([i]) * (i + 1)) for i in (0, 3, 7))
)


def _feed_in_pieces(parser: EnvelopeParser, data: bytes, cuts: list[int]) -> list[CipherBlock]:
    blocks: list[CipherBlock] = []
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts} | {len(data)}):
        blocks += parser.feed(data[start:cut])
        start = cut
    return blocks


def test_pieces_written_one_by_one_are_the_whole_envelope() -> None:
    head = update_head_to_bytes(FP, 12, 2, UPDATE.update_id, len(UPDATE.blocks))
    pieces = head + b"".join(cipher_block_to_bytes(b) for b in UPDATE.blocks)
    assert pieces == update_to_bytes(UPDATE)

    model = EncryptedModel(FP, 5, 1, UPDATE.blocks)
    head = model_head_to_bytes(FP, 5, 1, len(model.blocks))
    assert head + b"".join(cipher_block_to_bytes(b) for b in model.blocks) == model_to_bytes(model)


@given(st.lists(st.integers(0, 200), max_size=12))
def test_any_split_parses_to_the_same_update(cuts: list[int]) -> None:
    data = update_to_bytes(UPDATE)
    parser = EnvelopeParser("update", LIMITS)

    blocks = _feed_in_pieces(parser, data, cuts)
    head = parser.close()

    assert tuple(blocks) == UPDATE.blocks
    assert (head.fingerprint, head.version, head.key_epoch, head.update_id) == (
        FP,
        12,
        2,
        UPDATE.update_id,
    )
    assert head.block_count == 3
    assert parser.size == len(data)


def test_a_model_streams_block_by_block() -> None:
    model = EncryptedModel(FP, 9, 3, UPDATE.blocks)
    data = model_to_bytes(model)
    parser = EnvelopeParser("model", LIMITS)

    seen = [len(parser.feed(data[i : i + 1])) for i in range(len(data))]

    assert sum(seen) == 3
    assert max(seen) == 1
    assert parser.close().update_id is None


def test_every_truncation_is_refused_on_close_in_the_whole_parsers_words() -> None:
    data = update_to_bytes(UPDATE)
    for cut in range(len(data)):
        with pytest.raises(EnvelopeTruncatedError) as whole:
            update_from_bytes(data[:cut], LIMITS)
        parser = EnvelopeParser("update", LIMITS)
        parser.feed(data[:cut])
        with pytest.raises(EnvelopeTruncatedError, match=re.escape(str(whole.value))):
            parser.close()


def test_a_body_past_the_limit_is_refused_as_it_arrives() -> None:
    parser = EnvelopeParser("update", LIMITS)
    with pytest.raises(EnvelopeTooLargeError):
        parser.feed(b"\0" * (LIMITS.max_total_bytes + 1))


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), min_size=1, max_size=6),
    st.lists(st.integers(0, 200), max_size=6),
    st.integers(-3, 3),
)
def test_mutated_envelopes_are_refused_like_the_whole_parser_refuses_them(
    flips: list[tuple[int, int]], cuts: list[int], extend: int
) -> None:
    data = bytearray(update_to_bytes(UPDATE))
    for at, value in flips:
        data[at % len(data)] = value
    data = data + b"\1" * extend if extend > 0 else data[: len(data) + extend]
    whole: type[Exception] | None = None
    try:
        expected = update_from_bytes(bytes(data), LIMITS)
    except CryptoError as exc:
        whole = type(exc)
    parser = EnvelopeParser("update", LIMITS)
    streamed: type[Exception] | None = None

    try:
        blocks = _feed_in_pieces(parser, bytes(data), cuts)
        parser.close()
    except CryptoError as exc:
        streamed = type(exc)

    assert streamed is whole
    if whole is None:
        assert tuple(blocks) == expected.blocks
