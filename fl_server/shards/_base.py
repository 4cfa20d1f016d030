"""``ShardBackend``: the ciphertext operations on a model's blocks, behind one narrow seam."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

import crypto
from fl_server.errors import StorageError
from fl_server.store import FileBlocks

__all__ = [
    "STREAM_ABOVE",
    "BlockBytes",
    "BlockList",
    "BlockSource",
    "ModelBlocks",
    "NoiseDraws",
    "ShardBackend",
    "ShardDiedError",
    "ShardError",
    "Staged",
    "as_source",
]

# An update's or a model's blocks as they travel: (block index, ciphertext bytes) pairs.
BlockBytes = Iterable[tuple[int, bytes]]

# An update of more ciphertext bytes than this is staged streamed (``Staged.source``):
# validated and dropped, then read and loaded again block by block by the operation that
# adds it. Below it, the loaded blocks are held until then (one deserialize, not two).
STREAM_ABOVE = 64 * 1024 * 1024


@runtime_checkable
class BlockSource(Protocol):
    """Blocks that can be read again, one at a time, in any order, until ``close``.

    ``indices[p]`` is the block index of the block at position ``p``; ``read(p)`` its
    ciphertext bytes; ``nbytes`` the sum of their lengths. An update's spool file is one
    (``fl_server.spool.SpooledBlocks``); ``BlockList`` holds them in memory.
    """

    @property
    def indices(self) -> Sequence[int]: ...

    @property
    def nbytes(self) -> int: ...

    def read(self, position: int) -> bytes: ...

    def close(self) -> None: ...


class BlockList:
    """A ``BlockSource`` of blocks held in memory."""

    def __init__(self, blocks: BlockBytes) -> None:
        pairs = list(blocks)
        self.indices = tuple(i for i, _ in pairs)
        self._data = [data for _, data in pairs]
        self.nbytes = sum(len(data) for data in self._data)

    def read(self, position: int) -> bytes:
        return self._data[position]

    def close(self) -> None:
        self._data = []


class ModelBlocks:
    """A ``BlockSource`` of every block of a model, in order, read from ``blocks`` when asked
    (a published model's or a checkpoint's files: never held all at once)."""

    def __init__(self, blocks: Sequence[bytes]) -> None:
        self._blocks = blocks
        self.indices = range(len(blocks))

    @property
    def nbytes(self) -> int:
        blocks = self._blocks
        if isinstance(blocks, FileBlocks):  # their sizes are known without reading them
            return sum(blocks.size(i) for i in self.indices)
        return sum(len(b) for b in blocks)

    def read(self, position: int) -> bytes:
        return self._blocks[position]

    def close(self) -> None:
        pass


def as_source(blocks: BlockBytes | BlockSource) -> BlockSource:
    """``blocks`` as a ``BlockSource`` (pairs are taken into a ``BlockList``)."""
    return blocks if isinstance(blocks, BlockSource) else BlockList(blocks)


class ShardError(StorageError):
    """A shard could not do what it was asked: the model it holds is no longer known.

    Answered like a log that cannot be written (503 ``storage_failed``): the job refuses
    writes until a restart rebuilds its model from the checkpoint and the log.
    """


class ShardDiedError(ShardError):
    """A shard's worker process is gone (killed, or out of memory)."""


@dataclass(frozen=True)
class Staged:
    """Blocks a backend validated, until one operation consumes them.

    ``token`` names them on every shard; ``indices`` are the blocks they touch. With no
    ``source`` the shards hold them loaded; with one (a large update, ``STREAM_ABOVE``)
    they were loaded and dropped, and the operation that consumes them reads ``source``
    again and loads and adds block by block (the same bytes: it cannot fail on input).
    The backend closes ``source`` once consumed.
    """

    token: int
    indices: tuple[int, ...]
    source: BlockSource | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def holds(source: BlockSource, *, model: bool, stream_above: int) -> bool:
        """Whether the shards keep ``source``'s blocks loaded between the phases: a model,
        or an update of at most ``stream_above`` bytes (larger ones are streamed)."""
        return model or source.nbytes <= stream_above

    @classmethod
    def of(cls, token: int, source: BlockSource, *, hold: bool) -> Staged:
        """Phase one passed: a held update's ``source`` is done with, and closed here."""
        if hold:
            source.close()
        return cls(token, tuple(source.indices), None if hold else source)

    def close(self) -> None:
        """Close a streamed update's source (a held one has none): it was discarded."""
        if self.source is not None:
            self.source.close()


@dataclass(frozen=True)
class NoiseDraws:
    """Seeded Gaussian noise for the model's parameter slots (hospital-level DP).

    ``draws`` holds one ``(seed, std)`` per noised update; each block's noise comes from
    ``(seed, block index)`` (``crypto.ServerCipher.add_noise``), so every shard draws its
    own blocks' alone. ``param_slots`` and ``total_params`` are the layout's: the canaries
    of each block and the last block's padding get none.
    """

    draws: tuple[tuple[int, float], ...]
    param_slots: int
    total_params: int

    def zero_row(self, index: int, block_size: int) -> npt.NDArray[np.bool_]:
        """Block ``index``'s row of ``ModelLayout.zero_mask``: the slots that get no noise."""
        row = np.ones(block_size, dtype=np.bool_)
        row[: min(max(self.total_params - index * self.param_slots, 0), self.param_slots)] = False
        return row

    def to_json(self) -> dict[str, Any]:
        return {
            "draws": [[seed, std] for seed, std in self.draws],
            "param_slots": self.param_slots,
            "total_params": self.total_params,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NoiseDraws:
        return cls(
            tuple((int(seed), float(std)) for seed, std in raw["draws"]),
            int(raw["param_slots"]),
            int(raw["total_params"]),
        )


class ShardBackend(Protocol):
    """Where the model's ciphertexts live and every ciphertext operation runs.

    The model's ``n_blocks`` blocks are split by block range across shards; each block
    has one owner, and each shard runs its operations in the order they were asked, so
    the asynchronous order per block is the order of the calls. ``ModelState`` keeps the
    bookkeeping (versions, receipts, weights, log records) and calls this; one thread
    calls it at a time. Only bytes go in and out: an implementation may keep its
    ciphertexts in this process (``InProcessBackend``), in worker processes
    (``ProcessBackend``), or on other machines.

    Staging is the first phase of every change: ``stage`` loads and validates an
    update's blocks on every shard, or on none (a bad block anywhere raises and leaves
    every shard as it was). The second phase (``buffer``, ``add``, ``subtract``,
    ``install``, ``probe``) consumes what was staged and cannot fail on input. A large
    update is not held loaded in between: its blocks travel again, one at a time, with the
    operation that consumes it (``Staged.source``). A new per-block operation (for example
    a seeded plaintext add) is one more method of this kind.
    """

    @property
    def profile(self) -> crypto.CkksProfile: ...

    @property
    def failure(self) -> ShardError | None:
        """Why the backend no longer works (a shard failed or died); ``None`` while it does."""

    @property
    def n_blocks(self) -> int:
        """The blocks of the model it is open for (0 before ``open``)."""

    def open(self, n_blocks: int) -> None:
        """Hold a model of ``n_blocks`` blocks (no model until ``install``); drops any held."""

    def stage(self, blocks: BlockBytes | BlockSource, *, model: bool = False) -> Staged:
        """Load and validate ``blocks`` (update blocks, or model blocks if ``model``);
        the backend takes a ``BlockSource`` over (it closes it).

        Model blocks are held loaded (they become the model); update blocks of more than
        ``STREAM_ABOVE`` bytes are streamed (``Staged.source``).

        Raises
        ------
        crypto.CryptoError
            A block that is not a valid ciphertext of its kind; nothing is staged.
        """

    def discard(self, staged: Staged) -> None:
        """Drop staged blocks unused (the second phase will not come)."""

    def buffer(self, staged: Staged, weight: float) -> None:
        """Add ``weight`` times the staged update into the FedBuff buffer."""

    def flush(self) -> None:
        """Add the buffer into the model and empty it."""

    def add(self, staged: Staged, weight: float) -> None:
        """Add ``weight`` times the staged update straight into the model (no buffer)."""

    def subtract(self, staged: Staged, weight: float) -> None:
        """Subtract ``weight`` times the staged update from the model (a repair)."""

    def install(self, staged: Staged) -> None:
        """Make the staged model blocks (every block) the model; the buffer is emptied."""

    def noise(self, noise: NoiseDraws) -> None:
        """Add ``noise`` into every block of the model (hospital-level DP)."""

    def serialize(self, indices: Sequence[int]) -> list[bytes]:
        """The model's blocks ``indices``, serialized, in that order."""

    def probe(
        self,
        subtract: Sequence[tuple[Staged, float]],
        add: Sequence[tuple[Staged, float]],
        noise: NoiseDraws | None = None,
    ) -> list[bytes]:
        """Every block of a copy of the model minus ``subtract`` plus ``add`` (at their
        weights), and minus ``noise``, serialized; the model is left as it was."""

    def close(self) -> None:
        """Stop (worker processes end); the backend is unusable afterwards."""
