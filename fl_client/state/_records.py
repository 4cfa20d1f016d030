"""What the client keeps locally: its credential, the model cache, progress, a pending update."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Array",
    "Credential",
    "EnvelopeFile",
    "ModelCache",
    "PendingUpdate",
    "PrivacyLedger",
    "Progress",
]

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Credential:
    """What enrollment gave this client; ``client_secret`` is never printed."""

    keyauth_url: str
    client_id: str
    client_name: str
    client_secret: str = field(repr=False)
    key_epoch: int
    profile: str


@dataclass(frozen=True)
class ModelCache:
    """The last pulled global model, decrypted: lets the next pull ask only for changes."""

    version: int
    key_epoch: int
    fingerprint: bytes
    blocks: npt.NDArray[np.float64]
    etag: str | None = None


@dataclass(frozen=True)
class Progress:
    """What this client has committed: rounds acknowledged, error-feedback residual,
    the local values of its personal tensors, and the last acknowledged update id."""

    rounds: int = 0
    fingerprint: bytes | None = None
    residual: npt.NDArray[np.float64] | None = None
    personal: Mapping[str, Array] = field(default_factory=dict)
    last_update_id: uuid.UUID | None = None


_CHUNK = 1 << 20


@dataclass(frozen=True)
class EnvelopeFile:
    """An envelope in a file, written as it was encrypted: sent from the file in pieces
    (iterable again for each retry), never read whole."""

    path: Path

    def __len__(self) -> int:
        return self.path.stat().st_size

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes."""
        with self.path.open("rb") as f:
            return f.read(n)


@dataclass(frozen=True)
class PendingUpdate:
    """An update written down before it is sent, and the progress it commits once acked.

    ``envelope`` is the envelope, or the file that holds it (``JobState.write_pending_envelope``).
    ``summary`` is plain JSON data about the round (wire bytes, training loss, ...).
    """

    update_id: uuid.UUID
    base_version: int
    key_epoch: int
    envelope: bytes | EnvelopeFile = field(repr=False)
    progress: Progress
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrivacyLedger:
    """What this hospital's DP-SGD has spent on a job: its accountant's history
    (``(noise_multiplier, sample_rate, steps)`` per run of equal steps), and the rounds."""

    accountant: str
    history: tuple[tuple[float, float, int], ...] = ()
    rounds: int = 0
