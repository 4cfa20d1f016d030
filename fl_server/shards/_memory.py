"""``InProcessBackend``: every block in this process, on the calling thread (tests, one core)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import crypto
from fl_server.shards._base import (
    STREAM_ABOVE,
    BlockBytes,
    BlockSource,
    NoiseDraws,
    Staged,
    as_source,
)
from fl_server.shards._core import ShardCore

__all__ = ["InProcessBackend"]


class InProcessBackend:
    """One ``ShardCore`` over the whole model: the ``ShardBackend`` without processes.

    A failed ``stage`` holds nothing, so the two phases need no coordination here.
    ``stream_above`` is as for ``ProcessBackend``.
    """

    def __init__(self, cipher: crypto.ServerCipher, *, stream_above: int = STREAM_ABOVE) -> None:
        self._core = ShardCore(cipher)
        self._tokens = itertools.count(1)
        self._stream_above = stream_above

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

    def stage(self, blocks: BlockBytes | BlockSource, *, model: bool = False) -> Staged:
        source = as_source(blocks)
        token = next(self._tokens)
        hold = Staged.holds(source, model=model, stream_above=self._stream_above)
        pairs = ((index, source.read(p)) for p, index in enumerate(source.indices))
        try:
            self._core.stage(token, pairs, model=model, hold=hold)
        except BaseException:
            source.close()
            raise
        return Staged.of(token, source, hold=hold)

    def discard(self, staged: Staged) -> None:
        staged.close()
        self._core.discard(staged.token)

    def buffer(self, staged: Staged, weight: float) -> None:
        self._core.buffer(staged.token, weight, _frames(staged))

    def add(self, staged: Staged, weight: float) -> None:
        self._core.add(staged.token, weight, _frames(staged))

    def flush(self) -> None:
        self._core.flush()

    def subtract(self, staged: Staged, weight: float) -> None:
        self._core.subtract(staged.token, weight, _frames(staged))

    def install(self, staged: Staged) -> None:
        self._core.install(staged.token, _frames(staged))

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
        frames = itertools.chain.from_iterable(_frames(s) for s, _ in (*subtract, *add))
        return self._core.probe(
            [(s.token, w) for s, w in subtract], [(s.token, w) for s, w in add], noise, frames
        )

    def close(self) -> None:
        self._core.open(0, 0)


def _frames(staged: Staged) -> Iterator[bytes]:
    """The bytes of streamed ``staged`` read again, one block at a time (none if held); the
    source is closed once they are all read."""
    source = staged.source
    if source is None:
        return
    try:
        for position in range(len(source.indices)):
            yield source.read(position)
    finally:
        source.close()
