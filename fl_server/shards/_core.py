"""``ShardCore``: the ciphertexts of one block range and the operations on them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import crypto
from fl_server.shards._base import NoiseDraws, ShardError

__all__ = ["ShardCore"]

_Loaded = list[tuple[int, crypto.EncryptedBlock]]


class ShardCore:
    """Blocks ``lo..hi-1`` of a model: their ciphertexts, their part of the buffer, and
    what is staged for them, named by token. Runs in whichever process owns the range."""

    def __init__(self, cipher: crypto.ServerCipher, lo: int = 0, hi: int = 0) -> None:
        self.cipher = cipher
        self.lo, self.hi = lo, hi
        self._blocks: list[crypto.EncryptedBlock] = []
        self._buffer: dict[int, crypto.EncryptedBlock] = {}
        self._staged: dict[int, _Loaded] = {}

    def open(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self._blocks, self._buffer, self._staged = [], {}, {}

    def stage(self, token: int, blocks: Iterable[tuple[int, bytes]], *, model: bool) -> None:
        load = self.cipher.load_model_block if model else self.cipher.load_update_block
        loaded: _Loaded = []
        for index, data in blocks:
            if not self.lo <= index < self.hi:
                raise ShardError(f"block {index} is not in this shard ({self.lo}..{self.hi - 1})")
            loaded.append((index, load(data)))
        self._staged[token] = loaded

    def discard(self, token: int) -> None:
        self._staged.pop(token, None)

    def buffer(self, token: int, weight: float) -> None:
        for index, block in self._take(token):
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

    def subtract(self, token: int, weight: float) -> None:
        for index, block in self._take(token):
            self.cipher.subtract_weighted(self._block(index), block, weight)

    def install(self, token: int) -> None:
        loaded = self._take(token)
        if [i for i, _ in loaded] != list(range(self.lo, self.hi)):
            raise ShardError(f"a model needs every block {self.lo}..{self.hi - 1}, in order")
        self._blocks = [block for _, block in loaded]
        self._buffer.clear()

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
    ) -> list[bytes]:
        # A keyless context cannot copy a ciphertext but by serializing and loading it.
        copy = [self.cipher.load_model_block(b) for b in self.serialize(range(self.lo, self.hi))]
        for token, weight in subtract:
            for index, block in self._take(token):
                self.cipher.subtract_weighted(copy[index - self.lo], block, weight)
        for token, weight in add:
            for index, block in self._take(token):
                self.cipher.add_weighted(copy[index - self.lo], block, weight)
        if noise is not None and noise.draws:
            self.noise(noise, into=copy)
        return [self.cipher.block_to_bytes(block) for block in copy]

    def _take(self, token: int) -> _Loaded:
        try:
            return self._staged.pop(token)
        except KeyError:
            raise ShardError(f"nothing is staged under token {token}") from None

    def _block(self, index: int) -> crypto.EncryptedBlock:
        if not self._blocks:
            raise ShardError("the shard holds no model")
        if not self.lo <= index < self.hi:
            raise ShardError(f"block {index} is not in this shard ({self.lo}..{self.hi - 1})")
        return self._blocks[index - self.lo]
