"""``InProcessBackend``: every block in this process, on the calling thread (tests, one core)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import crypto
from fl_server.shards._base import BlockBytes, NoiseDraws, Staged
from fl_server.shards._core import ShardCore

__all__ = ["InProcessBackend"]


class InProcessBackend:
    """One ``ShardCore`` over the whole model: the ``ShardBackend`` without processes.

    A failed ``stage`` holds nothing, so the two phases need no coordination here.
    """

    def __init__(self, cipher: crypto.ServerCipher) -> None:
        self._core = ShardCore(cipher)
        self._tokens = itertools.count(1)

    @property
    def profile(self) -> crypto.CkksProfile:
        return self._core.cipher.profile

    @property
    def failure(self) -> None:
        return None  # an error here is raised to the caller as it happens

    @property
    def n_blocks(self) -> int:
        return self._core.hi

    def open(self, n_blocks: int) -> None:
        self._core.open(0, n_blocks)

    def stage(self, blocks: BlockBytes, *, model: bool = False) -> Staged:
        token = next(self._tokens)
        pairs = list(blocks)
        self._core.stage(token, pairs, model=model)
        return Staged(token, tuple(i for i, _ in pairs))

    def discard(self, staged: Staged) -> None:
        self._core.discard(staged.token)

    def buffer(self, staged: Staged, weight: float) -> None:
        self._core.buffer(staged.token, weight)

    def flush(self) -> None:
        self._core.flush()

    def subtract(self, staged: Staged, weight: float) -> None:
        self._core.subtract(staged.token, weight)

    def install(self, staged: Staged) -> None:
        self._core.install(staged.token)

    def noise(self, noise: NoiseDraws) -> None:
        self._core.noise(noise)

    def serialize(self, indices: Sequence[int]) -> list[bytes]:
        return self._core.serialize(indices)

    def probe(
        self,
        subtract: Sequence[tuple[Staged, float]],
        add: Sequence[tuple[Staged, float]],
        noise: NoiseDraws | None = None,
    ) -> list[bytes]:
        return self._core.probe(
            [(s.token, w) for s, w in subtract], [(s.token, w) for s, w in add], noise
        )

    def close(self) -> None:
        self._core.open(0, 0)
