"""Which blocks of an update to send: all, top-k by norm (or by energy), or random-k.

Every selector takes the dense update and the residual carried from earlier rounds
(error feedback: what was not sent is added to the next update) and returns the
chosen blocks and the new residual explicitly. Nothing is remembered between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "CompressedUpdate",
    "all_blocks",
    "blocks_for_fraction",
    "random_block_indices",
    "random_k_blocks",
    "top_energy_blocks",
    "top_k_blocks",
]

Blocks = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CompressedUpdate:
    """The blocks to send and what stays behind.

    Attributes
    ----------
    indices
        Sorted indices of the blocks sent.
    blocks
        ``(len(indices), block_size)`` values to encrypt and send.
    residual
        ``(n_blocks, block_size)``: the error-feedback memory for the next round.
    """

    indices: npt.NDArray[np.int64]
    blocks: Blocks
    residual: Blocks


def _as_blocks(delta: npt.ArrayLike) -> Blocks:
    arr = np.asarray(delta, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"update must be (n_blocks, block_size), got shape {arr.shape}")
    return arr


def _corrected(delta: npt.ArrayLike, residual: npt.ArrayLike | None) -> Blocks:
    arr = _as_blocks(delta)
    if residual is None:
        return arr.copy()
    res = np.asarray(residual, dtype=np.float64)
    if res.shape != arr.shape:
        raise ValueError(f"residual shape {res.shape} differs from update shape {arr.shape}")
    return arr + res


def _split(corrected: Blocks, indices: npt.NDArray[np.int64]) -> CompressedUpdate:
    indices = np.sort(indices).astype(np.int64)
    sent = corrected[indices].copy()
    residual = corrected
    residual[indices] = 0.0
    return CompressedUpdate(indices=indices, blocks=sent, residual=residual)


def blocks_for_fraction(n_blocks: int, fraction: float) -> int:
    """How many blocks ``fraction`` of ``n_blocks`` means: at least one, at most all."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return min(n_blocks, max(1, math.ceil(fraction * n_blocks)))


def all_blocks(delta: npt.ArrayLike, residual: npt.ArrayLike | None = None) -> CompressedUpdate:
    """Send everything (plus any residual); the residual becomes zero.

    Without a residual the blocks sent are ``delta`` itself, not a copy, and the zero
    residual is allocated lazily: a dense update of a large model holds no second copy.
    """
    sent = _as_blocks(delta) if residual is None else _corrected(delta, residual)
    indices = np.arange(sent.shape[0], dtype=np.int64)
    # np.zeros, not zeros_like: calloc, so its pages stay untouched until written
    return CompressedUpdate(indices=indices, blocks=sent, residual=np.zeros(sent.shape))


def top_k_blocks(delta: npt.ArrayLike, residual: npt.ArrayLike | None, k: int) -> CompressedUpdate:
    """Send the ``k`` blocks of largest L2 norm of ``delta + residual`` (ties: lower index)."""
    corrected = _corrected(delta, residual)
    if not 1 <= k <= corrected.shape[0]:
        raise ValueError(f"k must be in 1..{corrected.shape[0]}, got {k}")
    norms = np.linalg.norm(corrected, axis=1)
    order = np.argsort(-norms, kind="stable")
    return _split(corrected, order[:k].astype(np.int64))


def top_energy_blocks(
    delta: npt.ArrayLike, residual: npt.ArrayLike | None, energy: float, k_max: int
) -> CompressedUpdate:
    """Send the fewest blocks of largest L2 norm of ``delta + residual`` that hold
    ``energy`` of its squared norm, at least one and at most ``k_max`` (adaptive top-k: a
    concentrated update sends few blocks, a spread one up to ``k_max``)."""
    corrected = _corrected(delta, residual)
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    if not 1 <= k_max <= corrected.shape[0]:
        raise ValueError(f"k_max must be in 1..{corrected.shape[0]}, got {k_max}")
    squares = np.einsum("ij,ij->i", corrected, corrected)
    order = np.argsort(-squares, kind="stable")
    total = float(squares.sum())
    held = np.cumsum(squares[order])
    # the first k whose blocks hold the share (all-zero update: one block)
    k = int(np.searchsorted(held, energy * total, side="left")) + 1 if total > 0 else 1
    return _split(corrected, order[: min(k, k_max)].astype(np.int64))


def random_block_indices(n_blocks: int, k: int, seed: int, round_: int) -> npt.NDArray[np.int64]:
    """``k`` distinct block indices drawn from ``(seed, round_)``: any party can derive them."""
    if not 1 <= k <= n_blocks:
        raise ValueError(f"k must be in 1..{n_blocks}, got {k}")
    if seed < 0 or round_ < 0:
        raise ValueError("seed and round must be non-negative")
    rng = np.random.default_rng([seed, round_])
    return np.sort(rng.choice(n_blocks, size=k, replace=False)).astype(np.int64)


def random_k_blocks(
    delta: npt.ArrayLike, residual: npt.ArrayLike | None, k: int, seed: int, round_: int
) -> CompressedUpdate:
    """Send ``k`` blocks chosen by ``random_block_indices(n_blocks, k, seed, round_)``."""
    corrected = _corrected(delta, residual)
    return _split(corrected, random_block_indices(corrected.shape[0], k, seed, round_))
