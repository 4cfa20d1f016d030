"""``ShardCore``: the ciphertexts of one block range and the operations on them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import crypto
from fl_server.shards._base import NoiseDraws, ShardError

__all__ = ["Frames", "ShardCore"]

_Loaded = list[tuple[int, crypto.EncryptedBlock]]

# The ciphertext bytes of streamed staged blocks, in the order the operation takes them.
Frames = Iterator[bytes]
_NONE: Frames = iter(())


@dataclass(frozen=True)
class _Streamed:
    """Staged blocks validated and dropped: their bytes come again with the operation."""

    indices: tuple[int, ...]
    model: bool


class ShardCore:
    """Blocks ``lo..hi-1`` of a model: their ciphertexts, their part of the buffer, and
    what is staged for them, named by token. Runs in whichever process owns the range.

    An operation on streamed staged blocks (``stage(..., hold=False)``) takes their bytes
    again from ``frames``, one block at a time, in the order of its tokens."""

    def __init__(self, cipher: crypto.ServerCipher, lo: int = 0, hi: int = 0) -> None:
        self.cipher = cipher
        self.lo, self.hi = lo, hi
        self._blocks: list[crypto.EncryptedBlock] = []
        self._buffer: dict[int, crypto.EncryptedBlock] = {}
        self._staged: dict[int, _Loaded | _Streamed] = {}

    def open(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self._blocks, self._buffer, self._staged = [], {}, {}

    def stage(
        self, token: int, blocks: Iterable[tuple[int, bytes]], *, model: bool, hold: bool = True
    ) -> None:
        """Load and validate ``blocks``; hold them loaded, or (not ``hold``) drop each."""
        load = self._loader(model)
        loaded: _Loaded = []
        indices: list[int] = []
        for index, data in blocks:
            if not self.lo <= index < self.hi:
                raise ShardError(f"block {index} is not in this shard ({self.lo}..{self.hi - 1})")
            block = load(data)
            if hold:
                loaded.append((index, block))
            else:
                indices.append(index)
            del block
        self._staged[token] = loaded if hold else _Streamed(tuple(indices), model)

    def discard(self, token: int) -> None:
        self._staged.pop(token, None)

    def buffer(self, token: int, weight: float, frames: Frames = _NONE) -> None:
        for index, block in self._take(token, frames):
            weighted = self.cipher.weight_update(block, weight)
            pending = self._buffer.get(index)
            if pending is None:
                self._buffer[index] = weighted
            else:
                self.cipher.add_into(pending, weighted)

    def flush(self) -> None:
        for index, pending in self._buffer.items():
            self.cipher.add_into(self._block(index), pending)
        self._buffer.clear()

    def add(self, token: int, weight: float, frames: Frames = _NONE) -> None:
        """``model += weight * update``, block by block: no buffer holds the update."""
        for index, block in self._take(token, frames):
            self.cipher.add_weighted(self._block(index), block, weight)

    def subtract(self, token: int, weight: float, frames: Frames = _NONE) -> None:
        for index, block in self._take(token, frames):
            self.cipher.subtract_weighted(self._block(index), block, weight)

    def install(self, token: int, frames: Frames = _NONE) -> None:
        staged = self._staged.get(token)
        indices = staged.indices if isinstance(staged, _Streamed) else [i for i, _ in staged or ()]
        if list(indices) != list(range(self.lo, self.hi)):
            self._staged.pop(token, None)
            raise ShardError(f"a model needs every block {self.lo}..{self.hi - 1}, in order")
        self._blocks, self._buffer = [], {}  # validated: the new model cannot fail on input
        self._blocks = [block for _, block in self._take(token, frames)]

    def noise(self, noise: NoiseDraws, into: Sequence[crypto.EncryptedBlock] | None = None) -> None:
        """Add ``noise`` into the model's blocks, or take it out of ``into`` (a probe's copy
        of them)."""
        blocks = self._blocks if into is None else into
        if not blocks and self.hi > self.lo:  # a shard of no blocks (a small model) has none
            raise ShardError("the shard holds no model")
        op = self.cipher.add_noise if into is None else self.cipher.subtract_noise
        size = self.cipher.profile.block_size
        for offset, block in enumerate(blocks):
            index = self.lo + offset
            mask = noise.zero_row(index, size)
            for seed, std in noise.draws:
                op(block, seed, std, index=index, zero_mask=mask)

    def serialize(self, indices: Sequence[int]) -> list[bytes]:
        return list(self.serialized(indices))

    def serialized(self, indices: Sequence[int]) -> Iterator[bytes]:
        """Blocks ``indices`` serialized one at a time, as they are taken (a worker sends
        each while it serializes the next); ``ShardError`` at once if one is not held."""
        blocks = [self._block(i) for i in indices]
        return (self.cipher.block_to_bytes(block) for block in blocks)

    def probe(
        self,
        subtract: Sequence[tuple[int, float]],
        add: Sequence[tuple[int, float]],
        noise: NoiseDraws | None = None,
        frames: Frames = _NONE,
    ) -> list[bytes]:
        # A keyless context cannot copy a ciphertext but by serializing and loading it.
        copy = [self.cipher.load_model_block(b) for b in self.serialize(range(self.lo, self.hi))]
        for token, weight in subtract:
            for index, block in self._take(token, frames):
                self.cipher.subtract_weighted(copy[index - self.lo], block, weight)
        for token, weight in add:
            for index, block in self._take(token, frames):
                self.cipher.add_weighted(copy[index - self.lo], block, weight)
        if noise is not None and noise.draws:
            self.noise(noise, into=copy)
        return [self.cipher.block_to_bytes(block) for block in copy]

    def _loader(self, model: bool) -> Callable[[bytes], crypto.EncryptedBlock]:
        return self.cipher.load_model_block if model else self.cipher.load_update_block

    def _take(self, token: int, frames: Frames) -> Iterator[tuple[int, crypto.EncryptedBlock]]:
        """The staged blocks of ``token``, loaded (streamed ones from ``frames``, one at a
        time, as they are taken)."""
        try:
            staged = self._staged.pop(token)
        except KeyError:
            raise ShardError(f"nothing is staged under token {token}") from None
        if isinstance(staged, _Streamed):
            return self._reload(staged, frames)
        return iter(staged)

    def _reload(
        self, staged: _Streamed, frames: Frames
    ) -> Iterator[tuple[int, crypto.EncryptedBlock]]:
        load = self._loader(staged.model)
        for index in staged.indices:
            data = next(frames, None)
            if data is None:
                raise ShardError(f"the bytes of staged block {index} did not come")
            yield index, load(data)

    def _block(self, index: int) -> crypto.EncryptedBlock:
        if not self._blocks:
            raise ShardError("the shard holds no model")
        if not self.lo <= index < self.hi:
            raise ShardError(f"block {index} is not in this shard ({self.lo}..{self.hi - 1})")
        return self._blocks[index - self.lo]
