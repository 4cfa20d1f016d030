"""The published model: an immutable serialized version that any thread may serve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import crypto
from fl_server.errors import VersionAheadError

__all__ = ["ModelSnapshot"]


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

    def _envelope(self, indices: Sequence[int]) -> bytes:
        blocks = tuple(crypto.CipherBlock(i, self.blocks[i]) for i in indices)
        model = crypto.EncryptedModel(self.fingerprint, self.version, self.key_epoch, blocks)
        return crypto.model_to_bytes(model)

    @cached_property
    def _full(self) -> bytes:
        return self._envelope(range(len(self.blocks)))

    def to_bytes(self, since: int | None = None) -> bytes:
        """The model envelope: every block, or only those changed after ``since``."""
        if since is None:
            return self._full
        return self._envelope(self.changed_since(since))
