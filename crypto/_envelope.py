"""The versioned binary wire envelope for encrypted models and updates (no pickle, no base64).

Layout, all integers little-endian::

    magic "HEFL" | format u8 | kind u8 | reserved u16 = 0 | layout fingerprint 32 bytes
    model  (kind 1): version u64 | key epoch u32 | block count u32 | blocks
    update (kind 2): base version u64 | key epoch u32 | update id 16 bytes | block count u32
                     | blocks
    block: index u32 | length u32 | ciphertext bytes

Block indices are strictly increasing. Parsing checks every length against the bytes
present and against explicit limits before it slices anything.

An envelope is also written and read piece by piece, so neither end holds it whole:
``model_head_to_bytes`` / ``update_head_to_bytes`` and ``cipher_block_to_bytes`` write it
head first, one block at a time; ``EnvelopeParser`` is fed the bytes as they arrive and
returns each block once its bytes are complete, with the same checks as the whole parsers.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from crypto._errors import (
    BlockIndexError,
    EnvelopeError,
    EnvelopeTooLargeError,
    EnvelopeTruncatedError,
    EnvelopeVersionError,
    LayoutMismatchError,
)

__all__ = [
    "ENVELOPE_HEADERS",
    "FORMAT_VERSION",
    "CipherBlock",
    "EncryptedModel",
    "EncryptedUpdate",
    "EnvelopeHead",
    "EnvelopeHeader",
    "EnvelopeHeaders",
    "EnvelopeLimits",
    "EnvelopeParser",
    "cipher_block_to_bytes",
    "model_from_bytes",
    "model_head_to_bytes",
    "model_to_bytes",
    "update_from_bytes",
    "update_head_to_bytes",
    "update_to_bytes",
]

MAGIC = b"HEFL"
FORMAT_VERSION = 1
_KIND_MODEL = 1
_KIND_UPDATE = 2
_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1


@dataclass(frozen=True)
class EnvelopeHeader:
    """One fixed-size header of the envelope: named little-endian fields in wire order.

    Parameters
    ----------
    fields
        ``(name, struct code)`` pairs, e.g. ``(("index", "I"), ("length", "I"))``.

    Attributes
    ----------
    codec : struct.Struct
        The whole header, the very ``struct`` the writers and the parser use.
    """

    fields: tuple[tuple[str, str], ...]
    codec: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codec", struct.Struct(self._format(len(self.fields))))

    def _format(self, n_fields: int) -> str:
        return "<" + "".join(code for _, code in self.fields[:n_fields])

    def _position(self, name: str) -> int:
        names = [field_name for field_name, _ in self.fields]
        if name not in names:
            raise KeyError(f"no field {name!r} in this header ({', '.join(names)})")
        return names.index(name)

    @property
    def size(self) -> int:
        """The header's length in bytes."""
        return self.codec.size

    def offset(self, name: str) -> int:
        """Where field ``name`` starts, counted from the header's first byte."""
        return struct.calcsize(self._format(self._position(name)))

    def field_codec(self, name: str) -> struct.Struct:
        """The little-endian ``struct`` of field ``name`` alone."""
        return struct.Struct("<" + self.fields[self._position(name)][1])


@dataclass(frozen=True)
class EnvelopeHeaders:
    """The envelope's byte layout (this module's docstring), as the writers and parser use it.

    hefl itself never needs it outside this module; it is public for tools that must write
    what ``update_to_bytes`` refuses to (the hostile-input corpus of the tests), so they
    never copy the layout.

    Attributes
    ----------
    magic, kind_model, kind_update
        The constant values of the prefix.
    prefix
        Opens every envelope: magic, format, kind, reserved, fingerprint.
    model, update
        Follows the prefix in a model or an update envelope.
    block
        Precedes each ciphertext: index, length.
    """

    magic: bytes
    kind_model: int
    kind_update: int
    prefix: EnvelopeHeader
    model: EnvelopeHeader
    update: EnvelopeHeader
    block: EnvelopeHeader


ENVELOPE_HEADERS = EnvelopeHeaders(
    magic=MAGIC,
    kind_model=_KIND_MODEL,
    kind_update=_KIND_UPDATE,
    prefix=EnvelopeHeader(
        (("magic", "4s"), ("format", "B"), ("kind", "B"), ("reserved", "H"), ("fingerprint", "32s"))
    ),
    model=EnvelopeHeader((("version", "Q"), ("key_epoch", "I"), ("block_count", "I"))),
    update=EnvelopeHeader(
        (("base_version", "Q"), ("key_epoch", "I"), ("update_id", "16s"), ("block_count", "I"))
    ),
    block=EnvelopeHeader((("index", "I"), ("length", "I"))),
)
_PREFIX = ENVELOPE_HEADERS.prefix.codec
_MODEL_HEAD = ENVELOPE_HEADERS.model.codec
_UPDATE_HEAD = ENVELOPE_HEADERS.update.codec
_BLOCK_HEAD = ENVELOPE_HEADERS.block.codec


@dataclass(frozen=True)
class CipherBlock:
    """One serialized ciphertext and the index of the model block it belongs to."""

    index: int
    data: bytes


@dataclass(frozen=True)
class EncryptedModel:
    """The encrypted global model, or the subset of its blocks changed since some version."""

    fingerprint: bytes
    version: int
    key_epoch: int
    blocks: tuple[CipherBlock, ...]


@dataclass(frozen=True)
class EncryptedUpdate:
    """A client's encrypted update against ``base_version``."""

    fingerprint: bytes
    base_version: int
    key_epoch: int
    update_id: uuid.UUID
    blocks: tuple[CipherBlock, ...]


@dataclass(frozen=True)
class EnvelopeLimits:
    """What a parser accepts: at most ``n_blocks`` blocks of at most ``max_block_bytes`` each.

    ``n_blocks`` is the layout's block count: every index must be below it.
    """

    n_blocks: int
    max_block_bytes: int
    expected_fingerprint: bytes | None = field(default=None)

    @property
    def max_total_bytes(self) -> int:
        per_block = _BLOCK_HEAD.size + self.max_block_bytes
        return _PREFIX.size + _UPDATE_HEAD.size + self.n_blocks * per_block


def _check_blocks(blocks: tuple[CipherBlock, ...]) -> None:
    last = -1
    for block in blocks:
        if not 0 <= block.index <= _U32_MAX or block.index <= last:
            raise BlockIndexError("block indices must be strictly increasing u32 values")
        if not block.data or len(block.data) > _U32_MAX:
            raise EnvelopeError("block data must be 1 byte to 4 GiB")
        last = block.index


def _prefix(kind: int, fingerprint: bytes) -> bytes:
    if len(fingerprint) != 32:
        raise EnvelopeError("fingerprint must be 32 bytes")
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, kind, 0, fingerprint)


def model_head_to_bytes(
    fingerprint: bytes, version: int, key_epoch: int, block_count: int
) -> bytes:
    """The bytes of a model envelope before its first block (prefix and model header)."""
    if not 0 <= version <= _U64_MAX or not 0 <= key_epoch <= _U32_MAX:
        raise EnvelopeError("version must fit u64 and key epoch u32")
    return _prefix(_KIND_MODEL, fingerprint) + _MODEL_HEAD.pack(version, key_epoch, block_count)


def update_head_to_bytes(
    fingerprint: bytes, base_version: int, key_epoch: int, update_id: uuid.UUID, block_count: int
) -> bytes:
    """The bytes of an update envelope before its first block (prefix and update header)."""
    if not 0 <= base_version <= _U64_MAX or not 0 <= key_epoch <= _U32_MAX:
        raise EnvelopeError("base version must fit u64 and key epoch u32")
    head = _UPDATE_HEAD.pack(base_version, key_epoch, update_id.bytes, block_count)
    return _prefix(_KIND_UPDATE, fingerprint) + head


def cipher_block_to_bytes(block: CipherBlock) -> bytes:
    """One block as the envelope carries it: index, length, ciphertext."""
    return _BLOCK_HEAD.pack(block.index, len(block.data)) + block.data


def _pack(head: bytes, blocks: tuple[CipherBlock, ...]) -> bytes:
    _check_blocks(blocks)
    parts = [head]
    for block in blocks:
        parts.append(_BLOCK_HEAD.pack(block.index, len(block.data)))
        parts.append(block.data)
    return b"".join(parts)


def model_to_bytes(model: EncryptedModel) -> bytes:
    """Serialize an encrypted model (all blocks or a subset)."""
    head = model_head_to_bytes(model.fingerprint, model.version, model.key_epoch, len(model.blocks))
    return _pack(head, model.blocks)


def update_to_bytes(update: EncryptedUpdate) -> bytes:
    """Serialize an encrypted update."""
    head = update_head_to_bytes(
        update.fingerprint,
        update.base_version,
        update.key_epoch,
        update.update_id,
        len(update.blocks),
    )
    return _pack(head, update.blocks)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n > len(self._view) - self.pos:
            raise EnvelopeTruncatedError(
                f"envelope ends inside {what} (needs {n} bytes at offset {self.pos}, "
                f"{len(self._view) - self.pos} left)"
            )
        out = self._view[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size, what))

    @property
    def remaining(self) -> int:
        return len(self._view) - self.pos


def _read_prefix(reader: _Reader, kind: int, limits: EnvelopeLimits) -> bytes:
    magic, version, got_kind, reserved, fingerprint = reader.unpack(_PREFIX, "the header")
    if magic != MAGIC:
        raise EnvelopeError("not a hefl envelope (bad magic)")
    if version != FORMAT_VERSION:
        raise EnvelopeVersionError(
            f"envelope format {version} is not supported (this build reads {FORMAT_VERSION})"
        )
    if got_kind != kind:
        names = {_KIND_MODEL: "model", _KIND_UPDATE: "update"}
        raise EnvelopeError(
            f"expected a {names[kind]} envelope, got kind {names.get(got_kind, got_kind)!r}"
        )
    if reserved != 0:
        raise EnvelopeError("reserved header bits must be zero")
    if limits.expected_fingerprint is not None and fingerprint != limits.expected_fingerprint:
        raise LayoutMismatchError("envelope was made for a different model layout")
    return bytes(fingerprint)


def _check_count(count: int, limits: EnvelopeLimits) -> None:
    if count > limits.n_blocks:
        raise BlockIndexError(f"{count} blocks declared, the layout has {limits.n_blocks}")


def _check_block_header(index: int, length: int, last: int, limits: EnvelopeLimits) -> None:
    if index <= last:
        raise BlockIndexError(f"block index {index} after {last}: duplicated or unordered")
    if index >= limits.n_blocks:
        raise BlockIndexError(f"block index {index} out of range 0..{limits.n_blocks - 1}")
    if length == 0:
        raise EnvelopeError(f"block {index} is empty")
    if length > limits.max_block_bytes:
        raise EnvelopeTooLargeError(
            f"block {index} declares {length} bytes, at most {limits.max_block_bytes} allowed"
        )


def _trailing(n: int) -> EnvelopeError:
    return EnvelopeError(f"{n} unexpected bytes after the last block")


def _read_blocks(reader: _Reader, count: int, limits: EnvelopeLimits) -> tuple[CipherBlock, ...]:
    _check_count(count, limits)
    blocks = []
    last = -1
    for i in range(count):
        index, length = reader.unpack(_BLOCK_HEAD, f"block header {i}")
        _check_block_header(index, length, last, limits)
        blocks.append(CipherBlock(index, bytes(reader.take(length, f"block {index}"))))
        last = index
    if reader.remaining:
        raise _trailing(reader.remaining)
    return tuple(blocks)


def _check_size(data: bytes, limits: EnvelopeLimits) -> None:
    if len(data) > limits.max_total_bytes:
        raise EnvelopeTooLargeError(
            f"envelope of {len(data)} bytes exceeds the {limits.max_total_bytes} allowed"
        )


def model_from_bytes(data: bytes, limits: EnvelopeLimits) -> EncryptedModel:
    """Parse an encrypted model; every malformed input raises an ``EnvelopeError``."""
    _check_size(data, limits)
    reader = _Reader(data)
    fingerprint = _read_prefix(reader, _KIND_MODEL, limits)
    version, key_epoch, count = reader.unpack(_MODEL_HEAD, "the model header")
    blocks = _read_blocks(reader, count, limits)
    return EncryptedModel(fingerprint, version, key_epoch, blocks)


def update_from_bytes(data: bytes, limits: EnvelopeLimits) -> EncryptedUpdate:
    """Parse an encrypted update; every malformed input raises an ``EnvelopeError``.

    An update must carry at least one block.
    """
    _check_size(data, limits)
    reader = _Reader(data)
    fingerprint = _read_prefix(reader, _KIND_UPDATE, limits)
    base_version, key_epoch, raw_id, count = reader.unpack(_UPDATE_HEAD, "the update header")
    _check_update_count(count)
    blocks = _read_blocks(reader, count, limits)
    return EncryptedUpdate(fingerprint, base_version, key_epoch, uuid.UUID(bytes=raw_id), blocks)


def _check_update_count(count: int) -> None:
    if count == 0:
        raise BlockIndexError("an update must carry at least one block")


@dataclass(frozen=True)
class EnvelopeHead:
    """What an envelope says before its first block.

    ``version`` is the model's version, or the update's base version; ``update_id`` is
    ``None`` in a model envelope.
    """

    fingerprint: bytes
    version: int
    key_epoch: int
    block_count: int
    update_id: uuid.UUID | None = None


class EnvelopeParser:
    """Parses an envelope fed in pieces of any size, holding at most one block's bytes.

    ``feed`` returns the blocks completed by the bytes given; ``head`` is known once the
    header has arrived; ``close`` checks that the envelope ended where it said it would.
    Every check of ``model_from_bytes`` / ``update_from_bytes`` is made as soon as its
    bytes are present, so a malformed envelope is refused before the rest is read.

    Parameters
    ----------
    kind
        ``"model"`` or ``"update"``.
    limits
        What the envelope may hold.
    """

    def __init__(self, kind: Literal["model", "update"], limits: EnvelopeLimits) -> None:
        self._kind = _KIND_MODEL if kind == "model" else _KIND_UPDATE
        self._head_codec = _MODEL_HEAD if kind == "model" else _UPDATE_HEAD
        self._limits = limits
        self._buffer = bytearray()
        self._size = 0
        self._consumed = 0
        self._fingerprint: bytes | None = None
        self._left = 0
        self._last = -1
        self._block: tuple[int, int] | None = None
        self.head: EnvelopeHead | None = None

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    def feed(self, data: bytes | memoryview) -> list[CipherBlock]:
        """Take the next bytes of the envelope; the blocks they complete, in order."""
        self._size += len(data)
        if self._size > self._limits.max_total_bytes:
            raise EnvelopeTooLargeError(
                f"envelope of more than {self._size - 1} bytes exceeds the "
                f"{self._limits.max_total_bytes} allowed"
            )
        self._buffer += data
        out: list[CipherBlock] = []
        while self._step(out):
            pass
        return out

    def _take(self, n: int) -> bytes:
        with memoryview(self._buffer) as view:
            out = bytes(view[:n])
        del self._buffer[:n]
        self._consumed += n
        return out

    def _need(self) -> tuple[int, str]:
        """How many bytes the next part takes, and what it is (the whole parsers' words)."""
        if self._fingerprint is None:
            return _PREFIX.size, "the header"
        if self.head is None:
            return (
                self._head_codec.size,
                f"the {'model' if self._kind == _KIND_MODEL else 'update'} header",
            )
        if self._block is None:
            return _BLOCK_HEAD.size, f"block header {self.head.block_count - self._left}"
        return self._block[1], f"block {self._block[0]}"

    def _step(self, out: list[CipherBlock]) -> bool:
        if self.head is not None and self._block is None and self._left == 0:
            if self._buffer:
                raise _trailing(len(self._buffer))
            return False
        need, _ = self._need()
        if len(self._buffer) < need:
            return False
        piece = self._take(need)
        if self._fingerprint is None:
            self._fingerprint = _read_prefix(_Reader(piece), self._kind, self._limits)
        elif self.head is None:
            self.head = self._read_head(self._fingerprint, piece)
        elif self._block is None:
            index, length = _BLOCK_HEAD.unpack(piece)
            _check_block_header(index, length, self._last, self._limits)
            self._block = (index, length)
        else:
            index = self._block[0]
            out.append(CipherBlock(index, piece))
            self._block, self._last, self._left = None, index, self._left - 1
        return True

    def _read_head(self, fingerprint: bytes, piece: bytes) -> EnvelopeHead:
        update_id = None
        if self._kind == _KIND_MODEL:
            version, key_epoch, count = _MODEL_HEAD.unpack(piece)
        else:
            version, key_epoch, raw_id, count = _UPDATE_HEAD.unpack(piece)
            _check_update_count(count)
            update_id = uuid.UUID(bytes=raw_id)
        _check_count(count, self._limits)
        self._left = count
        return EnvelopeHead(fingerprint, version, key_epoch, count, update_id)

    def close(self) -> EnvelopeHead:
        """The envelope's head, once every byte it declared has arrived and no more.

        Raises
        ------
        EnvelopeTruncatedError
            The envelope ended early.
        """
        if self.head is None or self._left or self._block is not None:
            need, what = self._need()
            raise EnvelopeTruncatedError(
                f"envelope ends inside {what} (needs {need} bytes at offset {self._consumed}, "
                f"{len(self._buffer)} left)"
            )
        return self.head
