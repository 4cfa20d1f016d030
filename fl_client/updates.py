"""From a trained model to wire bytes and back: delta → compress → scale → encrypt → envelope.

The error-feedback residual is explicit state: ``prepare_update`` takes the residual of
the last acknowledged round and returns the next one, which the caller commits only when
the server acknowledges the update (a rejected update leaves the residual unchanged).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crypto import (
    CipherBlock,
    CiphertextError,
    ClientCipher,
    CompressedUpdate,
    EncryptedModel,
    EncryptedUpdate,
    EnvelopeLimits,
    ModelLayout,
    all_blocks,
    blocks_for_fraction,
    model_to_bytes,
    random_k_blocks,
    top_energy_blocks,
    top_k_blocks,
    update_to_bytes,
)
from hefl_study import Compression

__all__ = [
    "CompressionConfig",
    "PreparedUpdate",
    "WireReport",
    "clip_update",
    "compress_delta",
    "decrypt_model",
    "encrypt_initial_model",
    "encrypt_model",
    "encrypt_update",
    "model_limits",
    "prepare_update",
]

Blocks = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CompressionConfig:
    """Which blocks an update carries.

    Attributes
    ----------
    method
        ``dense`` (all), ``top-k`` (largest L2 norm of delta + residual) or ``random-k``
        (drawn from ``seed`` and the round number).
    fraction
        Share of blocks for top-k and random-k (at least one block).
    seed
        Seed of random-k.
    error_feedback
        Keep what was not sent and add it to the next update.
    energy
        With top-k: send only as many of the ``fraction`` blocks as hold this share of
        the squared norm of delta + residual (``crypto.top_energy_blocks``).
    """

    method: Compression = "dense"
    fraction: float = 0.1
    seed: int = 0
    error_feedback: bool = True
    energy: float | None = None

    def k(self, n_blocks: int) -> int:
        return n_blocks if self.method == "dense" else blocks_for_fraction(n_blocks, self.fraction)


def clip_update(values: Blocks, bound: float) -> Blocks:
    """``values`` scaled down to L2 norm ``bound`` if its norm is larger (a copy).

    Hospital-level DP's clipping: the norm is over every value of the update (canaries
    and padding hold 0).
    """
    if not (np.isfinite(bound) and bound > 0):
        raise ValueError(f"the clipping bound must be positive and finite, got {bound!r}")
    norm = float(np.linalg.norm(values))
    return values * (bound / norm) if norm > bound else values.copy()


def compress_delta(
    delta: Blocks, residual: Blocks | None, config: CompressionConfig, round_: int
) -> CompressedUpdate:
    """Choose the blocks to send from ``delta`` (plus ``residual`` with error feedback)."""
    carried = residual if config.error_feedback else None
    if config.method == "dense":
        return all_blocks(delta, carried)
    k = config.k(delta.shape[0])
    if config.method == "top-k" and config.energy is not None:
        return top_energy_blocks(delta, carried, config.energy, k)
    if config.method == "top-k":
        return top_k_blocks(delta, carried, k)
    return random_k_blocks(delta, carried, k, config.seed, round_)


@dataclass(frozen=True)
class WireReport:
    """What one upload put on the wire."""

    envelope_bytes: int
    blocks_sent: int
    n_blocks: int
    shared_params: int
    block_size: int

    @property
    def bytes_per_param(self) -> float:
        """Envelope bytes per shared model parameter."""
        return self.envelope_bytes / self.shared_params

    @property
    def bytes_per_value_sent(self) -> float:
        """Envelope bytes per slot value in the blocks sent (about 8 with seeded CKKS)."""
        return self.envelope_bytes / (self.blocks_sent * self.block_size)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "envelope_bytes": self.envelope_bytes,
            "blocks_sent": self.blocks_sent,
            "n_blocks": self.n_blocks,
            "shared_params": self.shared_params,
            "bytes_per_param": round(self.bytes_per_param, 3),
            "bytes_per_value_sent": round(self.bytes_per_value_sent, 3),
        }


@dataclass(frozen=True)
class PreparedUpdate:
    """An encrypted update ready to send, and the residual to keep once it is acked."""

    update: EncryptedUpdate
    envelope: bytes
    compressed: CompressedUpdate
    residual: Blocks | None
    report: WireReport


def _encrypt_blocks(
    encrypt: Callable[[Any], bytes],
    indices: npt.NDArray[np.int64],
    values: Blocks,
    on_block: Callable[[], object] | None,
) -> tuple[CipherBlock, ...]:
    out = []
    for index, row in zip(indices.tolist(), values, strict=True):
        out.append(CipherBlock(int(index), encrypt(row)))
        if on_block is not None:
            on_block()
    return tuple(out)


def encrypt_update(
    cipher: ClientCipher,
    layout: ModelLayout,
    compressed: CompressedUpdate,
    *,
    step: float,
    base_version: int,
    key_epoch: int,
    update_id: uuid.UUID | None = None,
    on_block: Callable[[], object] | None = None,
) -> EncryptedUpdate:
    """Encrypt ``u = step * compressed.blocks``: what the server adds to the model."""
    blocks = _encrypt_blocks(
        cipher.encrypt_update_block, compressed.indices, step * compressed.blocks, on_block
    )
    return EncryptedUpdate(
        fingerprint=layout.fingerprint,
        base_version=base_version,
        key_epoch=key_epoch,
        update_id=update_id or uuid.uuid4(),
        blocks=blocks,
    )


def prepare_update(
    cipher: ClientCipher,
    layout: ModelLayout,
    delta: Blocks,
    residual: Blocks | None,
    config: CompressionConfig,
    *,
    step: float,
    round_: int,
    base_version: int,
    key_epoch: int,
    on_block: Callable[[], object] | None = None,
    clip: float | None = None,
) -> PreparedUpdate:
    """Compress, scale by the client step η, encrypt with a fresh update id, serialize.

    Parameters
    ----------
    delta
        ``trained - pulled`` as ``(n_blocks, block_size)``.
    residual
        The error-feedback residual of the last acknowledged round, or ``None``.
    step
        η of protocol.md.
    round_
        This client's round number (draws random-k's blocks).
    clip
        Hospital-level DP (the study's ``[privacy] clip``): what is sent, ``η · (delta +
        residual)`` before compression, is clipped to this L2 norm first, so the update
        never exceeds it; the residual kept is what the clipped vector did not send.
    """
    if clip is not None:
        carried = residual if config.error_feedback and residual is not None else 0.0
        clipped = clip_update(delta + carried, clip / step)
        compressed = compress_delta(clipped, None, config, round_)
    else:
        compressed = compress_delta(delta, residual, config, round_)
    update = encrypt_update(
        cipher,
        layout,
        compressed,
        step=step,
        base_version=base_version,
        key_epoch=key_epoch,
        on_block=on_block,
    )
    envelope = update_to_bytes(update)
    keep = config.error_feedback and config.method != "dense"
    report = WireReport(
        envelope_bytes=len(envelope),
        blocks_sent=len(update.blocks),
        n_blocks=layout.n_blocks,
        shared_params=layout.total_params,
        block_size=layout.block_size,
    )
    return PreparedUpdate(
        update=update,
        envelope=envelope,
        compressed=compressed,
        residual=compressed.residual if keep else None,
        report=report,
    )


def encrypt_initial_model(
    cipher: ClientCipher,
    layout: ModelLayout,
    blocks: Blocks,
    *,
    key_epoch: int,
    on_block: Callable[[], object] | None = None,
) -> bytes:
    """The initial model envelope: version 0, every block, at the model scale."""
    return encrypt_model(cipher, layout, blocks, version=0, key_epoch=key_epoch, on_block=on_block)


def encrypt_model(
    cipher: ClientCipher,
    layout: ModelLayout,
    blocks: Blocks,
    *,
    version: int,
    key_epoch: int,
    on_block: Callable[[], object] | None = None,
) -> bytes:
    """A whole model envelope at the model scale: the initial model, or a model
    re-encrypted under a new key epoch (a key rotation)."""
    indices = np.arange(layout.n_blocks, dtype=np.int64)
    model = EncryptedModel(
        fingerprint=layout.fingerprint,
        version=version,
        key_epoch=key_epoch,
        blocks=_encrypt_blocks(cipher.encrypt_model_block, indices, blocks, on_block),
    )
    return model_to_bytes(model)


def model_limits(layout: ModelLayout, max_block_bytes: int) -> EnvelopeLimits:
    """What a model envelope from the server may hold for this layout."""
    return EnvelopeLimits(
        n_blocks=layout.n_blocks,
        max_block_bytes=max_block_bytes,
        expected_fingerprint=layout.fingerprint,
    )


def decrypt_model(
    cipher: ClientCipher,
    model: EncryptedModel,
    layout: ModelLayout,
    base: Blocks | None = None,
    on_block: Callable[[], object] | None = None,
    *,
    undecryptable: float | None = None,
) -> Blocks:
    """Decrypt the blocks ``model`` carries over ``base`` (a copy is returned).

    Without ``base`` the envelope must carry every block. A block that cannot be
    decrypted (``CiphertextError``) raises, or with ``undecryptable`` set holds that
    value in every slot (NaN: the integrity check reports the block as not finite).
    """
    shape = (layout.n_blocks, layout.block_size)
    if base is None:
        if len(model.blocks) != layout.n_blocks:
            raise ValueError(f"a full model has {layout.n_blocks} blocks, got {len(model.blocks)}")
        out = np.zeros(shape, dtype=np.float64)
    else:
        if base.shape != shape:
            raise ValueError(f"base has shape {base.shape}, layout needs {shape}")
        out = base.copy()
    for block in model.blocks:
        try:
            out[block.index] = cipher.decrypt_block(block.data)
        except CiphertextError:
            if undecryptable is None:
                raise
            out[block.index] = undecryptable
        if on_block is not None:
            on_block()
    return out
