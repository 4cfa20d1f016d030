"""From a trained model to wire bytes and back: delta → compress → scale → encrypt → envelope.

Envelopes are written and read block by block (``write_update``, ``write_model``,
``decrypt_model_stream``): the client never holds a whole envelope, so its memory is the
plaintext model (and a copy) plus one ciphertext, whatever the model's size.

The error-feedback residual is explicit state: ``prepare_update`` takes the residual of
the last acknowledged round and returns the next one, which the caller commits only when
the server acknowledges the update (a rejected update leaves the residual unchanged).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from crypto import (
    CipherBlock,
    CiphertextError,
    ClientCipher,
    CompressedUpdate,
    EncryptedModel,
    EncryptedUpdate,
    EnvelopeHead,
    EnvelopeLimits,
    EnvelopeParser,
    ModelLayout,
    all_blocks,
    blocks_for_fraction,
    cipher_block_to_bytes,
    model_head_to_bytes,
    random_k_blocks,
    top_energy_blocks,
    top_k_blocks,
    update_from_bytes,
    update_head_to_bytes,
)
from hefl_study import Compression

__all__ = [
    "CompressionConfig",
    "PreparedUpdate",
    "Sink",
    "WireReport",
    "WrittenUpdate",
    "clip_update",
    "compress_delta",
    "decrypt_model",
    "decrypt_model_stream",
    "encrypt_initial_model",
    "encrypt_model",
    "encrypt_update",
    "model_limits",
    "prepare_update",
    "write_model",
    "write_update",
]


class Sink(Protocol):
    """Where an envelope is written as it is encrypted: a file, or ``io.BytesIO``."""

    def write(self, data: bytes, /) -> int: ...


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
class WrittenUpdate:
    """An update written to a sink, and the residual to keep once it is acked."""

    update_id: uuid.UUID
    compressed: CompressedUpdate
    residual: Blocks | None
    report: WireReport


@dataclass(frozen=True)
class PreparedUpdate:
    """An encrypted update ready to send, and the residual to keep once it is acked."""

    update: EncryptedUpdate
    envelope: bytes
    compressed: CompressedUpdate
    residual: Blocks | None
    report: WireReport


def _write_blocks(
    sink: Sink,
    encrypt: Callable[[Any], bytes],
    indices: npt.NDArray[np.int64],
    values: Blocks,
    step: float,
    on_block: Callable[[], object] | None,
) -> tuple[int, tuple[CipherBlock, ...]]:
    """Encrypt and write one block at a time: ``(bytes written, blocks kept)``; the
    ciphertexts are kept only when the sink is in memory anyway."""
    keep = isinstance(sink, io.BytesIO)
    kept = []
    written = 0
    for index, row in zip(indices.tolist(), values, strict=True):
        block = CipherBlock(int(index), encrypt(row * step if step != 1.0 else row))
        written += sink.write(cipher_block_to_bytes(block))
        if keep:
            kept.append(block)
        if on_block is not None:
            on_block()
    return written, tuple(kept)


def _encrypt_blocks(
    encrypt: Callable[[Any], bytes],
    indices: npt.NDArray[np.int64],
    values: Blocks,
    on_block: Callable[[], object] | None,
) -> tuple[CipherBlock, ...]:
    return _write_blocks(io.BytesIO(), encrypt, indices, values, 1.0, on_block)[1]


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


def write_update(
    cipher: ClientCipher,
    layout: ModelLayout,
    delta: Blocks,
    residual: Blocks | None,
    config: CompressionConfig,
    sink: Sink,
    *,
    step: float,
    round_: int,
    base_version: int,
    key_epoch: int,
    on_block: Callable[[], object] | None = None,
    clip: float | None = None,
) -> WrittenUpdate:
    """Compress, scale by the client step η, encrypt with a fresh update id, and write the
    envelope to ``sink`` one block at a time, as it is encrypted.

    Parameters
    ----------
    delta
        ``trained - pulled`` as ``(n_blocks, block_size)``.
    residual
        The error-feedback residual of the last acknowledged round, or ``None``.
    sink
        Receives the envelope's bytes in order (a file opened for writing, ``io.BytesIO``).
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
    update_id = uuid.uuid4()
    n_sent = len(compressed.indices)
    written = sink.write(
        update_head_to_bytes(layout.fingerprint, base_version, key_epoch, update_id, n_sent)
    )
    written += _write_blocks(
        sink, cipher.encrypt_update_block, compressed.indices, compressed.blocks, step, on_block
    )[0]
    keep = config.error_feedback and config.method != "dense"
    report = WireReport(
        envelope_bytes=written,
        blocks_sent=n_sent,
        n_blocks=layout.n_blocks,
        shared_params=layout.total_params,
        block_size=layout.block_size,
    )
    return WrittenUpdate(
        update_id=update_id,
        compressed=compressed,
        residual=compressed.residual if keep else None,
        report=report,
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
    """``write_update`` into memory: the envelope and its parsed update (for small models,
    simulations and tests)."""
    sink = io.BytesIO()
    written = write_update(
        cipher,
        layout,
        delta,
        residual,
        config,
        sink,
        step=step,
        round_=round_,
        base_version=base_version,
        key_epoch=key_epoch,
        on_block=on_block,
        clip=clip,
    )
    envelope = sink.getvalue()
    limits = EnvelopeLimits(layout.n_blocks, max(len(envelope), 1))
    return PreparedUpdate(
        update=update_from_bytes(envelope, limits),
        envelope=envelope,
        compressed=written.compressed,
        residual=written.residual,
        report=written.report,
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
    sink = io.BytesIO()
    write_model(
        cipher, layout, blocks, sink, version=version, key_epoch=key_epoch, on_block=on_block
    )
    return sink.getvalue()


def write_model(
    cipher: ClientCipher,
    layout: ModelLayout,
    blocks: Blocks,
    sink: Sink,
    *,
    version: int,
    key_epoch: int,
    on_block: Callable[[], object] | None = None,
) -> int:
    """``encrypt_model`` written to ``sink`` one block at a time; the bytes written."""
    written = sink.write(
        model_head_to_bytes(layout.fingerprint, version, key_epoch, layout.n_blocks)
    )
    indices = np.arange(layout.n_blocks, dtype=np.int64)
    return (
        written + _write_blocks(sink, cipher.encrypt_model_block, indices, blocks, 1.0, on_block)[0]
    )


def model_limits(layout: ModelLayout, max_block_bytes: int) -> EnvelopeLimits:
    """What a model envelope from the server may hold for this layout."""
    return EnvelopeLimits(
        n_blocks=layout.n_blocks,
        max_block_bytes=max_block_bytes,
        expected_fingerprint=layout.fingerprint,
    )


def _model_out(layout: ModelLayout, base: Blocks | None) -> Blocks:
    shape = (layout.n_blocks, layout.block_size)
    if base is None:
        return np.zeros(shape, dtype=np.float64)
    if base.shape != shape:
        raise ValueError(f"base has shape {base.shape}, layout needs {shape}")
    return base.copy()


def _decrypt_into(
    out: Blocks, cipher: ClientCipher, block: CipherBlock, undecryptable: float | None
) -> None:
    try:
        out[block.index] = cipher.decrypt_block(block.data)
    except CiphertextError:
        if undecryptable is None:
            raise
        out[block.index] = undecryptable


def _full_model_check(layout: ModelLayout, n_blocks: int) -> None:
    if n_blocks != layout.n_blocks:
        raise ValueError(f"a full model has {layout.n_blocks} blocks, got {n_blocks}")


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
    if base is None:
        _full_model_check(layout, len(model.blocks))
    out = _model_out(layout, base)
    for block in model.blocks:
        _decrypt_into(out, cipher, block, undecryptable)
        if on_block is not None:
            on_block()
    return out


def decrypt_model_stream(
    cipher: ClientCipher,
    chunks: Iterable[bytes | memoryview],
    limits: EnvelopeLimits,
    layout: ModelLayout,
    base: Blocks | None = None,
    on_block: Callable[[], object] | None = None,
    *,
    undecryptable: float | None = None,
) -> tuple[EnvelopeHead, Blocks]:
    """``decrypt_model`` of a model envelope that arrives in pieces (a download as it
    streams): each block is decrypted as soon as its bytes are in, never the whole
    envelope held. Returns the envelope's head and the model.

    Raises
    ------
    EnvelopeError, LayoutMismatchError
        The envelope is malformed, or of another layout (``limits``).
    ValueError
        Without ``base``, the envelope does not carry every block.
    """
    out = _model_out(layout, base)
    parser = EnvelopeParser("model", limits)
    for chunk in chunks:
        for block in parser.feed(chunk):
            _decrypt_into(out, cipher, block, undecryptable)
            if on_block is not None:
                on_block()
        if base is None and parser.head is not None:
            _full_model_check(layout, parser.head.block_count)
    head = parser.close()
    return head, out
