"""The published model: an immutable serialized version that any thread may serve."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import crypto
from fl_server.errors import VersionAheadError

__all__ = ["EnvelopeBody", "ModelSnapshot"]

_CHUNK = 1 << 20


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
        return len(self.head) + sum(block_header + len(self.blocks[i]) for i in self.indices)

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

    ``block_versions[i]`` is the version at which block ``i`` last changed.
    """

    job_id: str
    fingerprint: bytes
    key_epoch: int
    version: int
    blocks: tuple[bytes, ...] = field(repr=False)
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
