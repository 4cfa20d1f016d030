"""The encrypted global model and what the update log implies: versions, buffer, ledger, counts.

``ModelState`` is the one place that changes ciphertexts. The live server and recovery
both drive it with the same ``UpdateRecord``s, so a replayed log rebuilds the model
that was acknowledged. Only the apply worker calls its mutating methods; other threads
read the immutable ``ModelSnapshot`` it publishes and copies of its counters.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import crypto
from fl_server.errors import StateError, TooStaleError, VersionAheadError
from fl_server.staleness import StalenessPolicy
from fl_server.store import Checkpoint, JobRecord, UpdateRecord

__all__ = [
    "RECEIPTS_KEPT_PER_CLIENT",
    "ClientTally",
    "ModelSnapshot",
    "ModelState",
    "ReceiptLedger",
    "UpdateReceipt",
    "UpdateTally",
]

# A client sends one update at a time and retries only that one; 8 leaves room for clients
# that pipeline a few.
RECEIPTS_KEPT_PER_CLIENT = 8


@dataclass(frozen=True)
class UpdateReceipt:
    """What the server answered for an applied update; a retry gets the same answer."""

    update_id: uuid.UUID
    client_id: str
    seq: int
    version: int
    staleness: int
    weight: float
    digest: bytes = field(repr=False)

    @property
    def base_version(self) -> int:
        """The version the update was trained on (it was weighed against ``version - 1``)."""
        return self.version - 1 - self.staleness

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": str(self.update_id),
            "client_id": self.client_id,
            "seq": self.seq,
            "version": self.version,
            "staleness": self.staleness,
            "weight": self.weight,
            "sha256": self.digest.hex(),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> UpdateReceipt:
        return cls(
            update_id=uuid.UUID(raw["update_id"]),
            client_id=str(raw["client_id"]),
            seq=int(raw["seq"]),
            version=int(raw["version"]),
            staleness=int(raw["staleness"]),
            weight=float(raw["weight"]),
            digest=bytes.fromhex(raw["sha256"]),
        )


class ReceiptLedger:
    """The receipts of applied updates that a retry could still need, and no more.

    A retried update must get its first answer and must never be applied twice. Keeping
    every receipt does both but grows without end, so a receipt is forgotten once a copy
    of its update could no longer be applied anyway: when the model has moved more than
    ``max_staleness`` versions past the update's base version, any resend is refused as
    too stale before the ledger is consulted. ``forgotten_below`` records that horizon
    (persisted with the checkpoint), so an update based below it is refused even if a
    restart raised ``max_staleness``. Each client's last ``keep_per_client`` receipts are
    kept whatever their age: the update a client retries after a crash or a timeout is
    its newest, and it gets its true receipt however fast the model moved meanwhile.

    Not thread-safe; ``ModelState`` guards it.
    """

    def __init__(self, keep_per_client: int = RECEIPTS_KEPT_PER_CLIENT) -> None:
        if keep_per_client < 1:
            raise ValueError(f"keep_per_client must be >= 1, got {keep_per_client!r}")
        self.keep_per_client = keep_per_client
        self.forgotten_below = 0
        self._recent: dict[uuid.UUID, UpdateReceipt] = {}  # in seq order
        self._pinned: dict[uuid.UUID, UpdateReceipt] = {}  # past the horizon, kept per client
        self._last: dict[str, deque[uuid.UUID]] = {}

    def __len__(self) -> int:
        return len(self._recent) + len(self._pinned)

    def get(self, update_id: uuid.UUID) -> UpdateReceipt | None:
        found = self._recent.get(update_id)
        return found if found is not None else self._pinned.get(update_id)

    def add(self, receipt: UpdateReceipt) -> None:
        self._recent[receipt.update_id] = receipt
        last = self._last.setdefault(receipt.client_id, deque())
        last.append(receipt.update_id)
        if len(last) > self.keep_per_client:
            self._pinned.pop(last.popleft(), None)

    def forget_below(self, horizon: int) -> None:
        """Forget the receipts of updates based below version ``horizon``, but the pinned.

        Receipts come in seq order and a base version trails its receipt's version by at
        most ``max_staleness + 1``, so stopping at the first receipt inside the horizon
        keeps only a bounded number of older ones a little longer.
        """
        if horizon <= self.forgotten_below:
            return
        self.forgotten_below = horizon
        while self._recent:
            update_id, receipt = next(iter(self._recent.items()))
            if receipt.base_version >= horizon:
                break
            del self._recent[update_id]
            if update_id in self._last[receipt.client_id]:
                self._pinned[update_id] = receipt

    def receipts(self) -> Iterator[UpdateReceipt]:
        """Every kept receipt, in seq order."""
        kept = [*self._recent.values(), *self._pinned.values()]
        return iter(sorted(kept, key=lambda r: r.seq))

    def to_json(self) -> dict[str, Any]:
        return {
            "receipts": [r.to_json() for r in self.receipts()],
            "forgotten_below": self.forgotten_below,
        }

    @classmethod
    def from_json(
        cls, raw: Mapping[str, Any], keep_per_client: int = RECEIPTS_KEPT_PER_CLIENT
    ) -> ReceiptLedger:
        ledger = cls(keep_per_client)
        for receipt in sorted(
            (UpdateReceipt.from_json(r) for r in raw["receipts"]), key=lambda r: r.seq
        ):
            ledger.add(receipt)
        ledger.forget_below(int(raw["forgotten_below"]))
        return ledger


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


@dataclass
class ClientTally:
    updates_applied: int = 0
    last_update_at: float | None = None
    client_name: str | None = None


@dataclass
class UpdateTally:
    """Counters derived from the log (so they survive restarts); copied for readers."""

    clients: dict[str, ClientTally] = field(default_factory=dict)
    staleness: dict[int, int] = field(default_factory=dict)
    weight_sum: float = 0.0

    def count(self, record: UpdateRecord) -> None:
        client = self.clients.setdefault(record.client_id, ClientTally())
        client.updates_applied += 1
        client.last_update_at = record.received_at
        client.client_name = record.client_name or client.client_name
        self.staleness[record.staleness] = self.staleness.get(record.staleness, 0) + 1
        self.weight_sum += record.weight

    def copy(self) -> UpdateTally:
        return UpdateTally(
            clients={
                k: ClientTally(v.updates_applied, v.last_update_at, v.client_name)
                for k, v in self.clients.items()
            },
            staleness=dict(self.staleness),
            weight_sum=self.weight_sum,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": {
                k: {
                    "updates_applied": v.updates_applied,
                    "last_update_at": v.last_update_at,
                    "client_name": v.client_name,
                }
                for k, v in self.clients.items()
            },
            "staleness": {str(k): v for k, v in self.staleness.items()},
            "weight_sum": self.weight_sum,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> UpdateTally:
        return cls(
            clients={
                str(k): ClientTally(
                    int(v["updates_applied"]), v["last_update_at"], v.get("client_name")
                )
                for k, v in raw["clients"].items()
            },
            staleness={int(k): int(v) for k, v in raw["staleness"].items()},
            weight_sum=float(raw["weight_sum"]),
        )


class ModelState:
    """The model's ciphertexts, the FedBuff buffer and the bookkeeping of applied updates.

    Use ``initial`` or ``from_checkpoint`` to build one. Not thread-safe for writers: one
    thread (the apply worker) calls ``apply``/``publish``/``checkpoint``; ``snapshot``,
    ``version`` and ``tally`` may be read from any thread. ``max_staleness`` is the
    staleness policy's: receipts of updates that could no longer be applied are forgotten
    (see ``ReceiptLedger``).
    """

    def __init__(
        self,
        cipher: crypto.ServerCipher,
        job: JobRecord,
        blocks: list[crypto.EncryptedBlock],
        snapshot: ModelSnapshot,
        *,
        seq: int,
        ledger: ReceiptLedger,
        tally: UpdateTally,
        max_staleness: int,
    ) -> None:
        self._cipher = cipher
        self.job = job
        self._blocks = blocks
        self._block_versions = list(snapshot.block_versions)
        self._buffer: dict[int, crypto.EncryptedBlock] = {}
        # The newest serialized bytes of each block; ``_dirty`` blocks changed since.
        self._bytes = list(snapshot.blocks)
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self.snapshot = snapshot
        self.version = snapshot.version
        self.seq = seq
        self.buffered = 0
        self._ledger = ledger
        self._tally = tally
        self._max_staleness = max_staleness

    @classmethod
    def initial(
        cls,
        cipher: crypto.ServerCipher,
        job: JobRecord,
        model: crypto.EncryptedModel,
        *,
        max_staleness: int,
    ) -> ModelState:
        """Version 0 from a client's initial model envelope (every block, model scale).

        Raises
        ------
        crypto.CryptoError
            A block that is not a valid model-scale ciphertext of this context.
        """
        blocks = [cipher.load_model_block(b.data) for b in model.blocks]
        data = tuple(b.data for b in model.blocks)
        snapshot = ModelSnapshot(
            job.job_id, model.fingerprint, job.key_epoch, 0, data, (0,) * len(data)
        )
        return cls(
            cipher,
            job,
            blocks,
            snapshot,
            seq=0,
            ledger=ReceiptLedger(),
            tally=UpdateTally(),
            max_staleness=max_staleness,
        )

    @classmethod
    def from_checkpoint(
        cls,
        cipher: crypto.ServerCipher,
        job: JobRecord,
        fingerprint: bytes,
        checkpoint: Checkpoint,
        *,
        max_staleness: int,
    ) -> ModelState:
        """The state a checkpoint recorded; ``StateError`` if it does not fit the job."""
        try:
            blocks = [cipher.load_model_block(b) for b in checkpoint.blocks]
            raw = checkpoint.state
            block_versions = tuple(int(v) for v in raw["block_versions"])
            raw_ledger = raw["ledger"]
            if isinstance(raw_ledger, list):  # checkpoints before receipts were forgotten
                raw_ledger = {"receipts": raw_ledger, "forgotten_below": 0}
            ledger = ReceiptLedger.from_json(raw_ledger)
            tally = UpdateTally.from_json(raw["tally"])
        except (crypto.CryptoError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"the checkpoint does not fit this job: {exc}") from exc
        if len(block_versions) != len(blocks):
            raise StateError("the checkpoint's block versions do not match its blocks")
        snapshot = ModelSnapshot(
            job.job_id,
            fingerprint,
            job.key_epoch,
            checkpoint.version,
            checkpoint.blocks,
            block_versions,
        )
        state = cls(
            cipher,
            job,
            blocks,
            snapshot,
            seq=checkpoint.seq,
            ledger=ledger,
            tally=tally,
            max_staleness=max_staleness,
        )
        state._forget_old_receipts()
        return state

    # -- reading ------------------------------------------------------------------------

    @property
    def n_blocks(self) -> int:
        return len(self._blocks)

    def receipt(self, update_id: uuid.UUID) -> UpdateReceipt | None:
        with self._lock:
            return self._ledger.get(update_id)

    def receipts_kept(self) -> int:
        with self._lock:
            return len(self._ledger)

    def tally(self) -> UpdateTally:
        with self._lock:
            return self._tally.copy()

    # -- deciding -----------------------------------------------------------------------

    def weigh(self, base_version: int, policy: StalenessPolicy) -> tuple[int, float]:
        """Staleness and applied weight of an update against ``base_version``.

        Raises
        ------
        VersionAheadError
            ``base_version`` is ahead of the model.
        TooStaleError
            Beyond the policy's ``max_staleness``, a weight that quantizes to zero, or
            based below the version whose older receipts are forgotten (``ReceiptLedger``).
        """
        version = self.version
        if base_version > version:
            raise VersionAheadError(
                f"base version {base_version} is ahead of the model (version {version})",
                current_version=version,
            )
        staleness = version - base_version
        weight = policy.weight(staleness)
        profile = self._cipher.profile
        if weight is None or profile.quantize_weight(weight) == 0:
            raise TooStaleError(
                f"update is {staleness} versions stale (at most {policy.max_staleness} with a "
                f"non-zero weight); pull the model and train again",
                current_version=version,
            )
        with self._lock:
            forgotten_below = self._ledger.forgotten_below
        if base_version < forgotten_below:
            # Receipts of updates this old are forgotten: it may be a resend of one applied.
            raise TooStaleError(
                f"update is based on version {base_version}; the server no longer keeps the "
                f"receipts of updates based below version {forgotten_below} and applies none; "
                f"pull the model and train again",
                current_version=version,
            )
        return staleness, profile.applied_weight(weight)

    def next_record(
        self,
        update: crypto.EncryptedUpdate,
        *,
        client_id: str,
        client_name: str | None = None,
        staleness: int,
        weight: float,
        received_at: float,
        digest: bytes,
        envelope: bytes,
        buffer_size: int,
        target_updates: int,
    ) -> UpdateRecord:
        """The log record for the next update: its ``seq``, version and whether it flushes."""
        seq = self.seq + 1
        flush = self.buffered + 1 >= buffer_size or seq >= target_updates
        return UpdateRecord(
            seq=seq,
            update_id=update.update_id,
            client_id=client_id,
            base_version=update.base_version,
            staleness=staleness,
            weight=weight,
            version=self.version + 1,
            flush=flush,
            received_at=received_at,
            digest=digest,
            envelope=envelope,
            client_name=client_name,
        )

    # -- changing -----------------------------------------------------------------------

    def apply(
        self, record: UpdateRecord, blocks: Sequence[tuple[int, crypto.EncryptedBlock]]
    ) -> UpdateReceipt:
        """Add ``record``'s weighted blocks to the buffer; add the buffer to the model on a flush.

        ``blocks`` are the record's update blocks, already loaded (and so validated);
        they are consumed.
        """
        if record.seq != self.seq + 1 or record.version != self.version + 1:
            raise StateError(
                f"update record seq {record.seq} / version {record.version} does not follow "
                f"seq {self.seq} / version {self.version}: the log is out of order"
            )
        for index, block in blocks:
            weighted = self._cipher.weight_update(block, record.weight)
            pending = self._buffer.get(index)
            if pending is None:
                self._buffer[index] = weighted
            else:
                self._cipher.add_into(pending, weighted)
        if record.flush:
            for index, pending in self._buffer.items():
                self._cipher.add_into(self._blocks[index], pending)
        receipt = UpdateReceipt(
            update_id=record.update_id,
            client_id=record.client_id,
            seq=record.seq,
            version=record.version,
            staleness=record.staleness,
            weight=record.weight,
            digest=record.digest,
        )
        with self._lock:
            self.seq = record.seq
            self._ledger.add(receipt)
            self._tally.count(record)
            if record.flush:
                for index in self._buffer:
                    self._block_versions[index] = record.version
                self._dirty.update(self._buffer)
                self._buffer.clear()
                self.buffered = 0
                self.version = record.version
            else:
                self.buffered += 1
        if record.flush:
            self._forget_old_receipts()
        return receipt

    def _forget_old_receipts(self) -> None:
        """Forget receipts no resend needs: ``weigh`` refuses updates based this far back."""
        with self._lock:
            self._ledger.forget_below(self.version - self._max_staleness)

    def serialize_changed(self, interrupt: Callable[[], bool] | None = None) -> bool:
        """Serialize the blocks changed since they were last serialized.

        Stops early, keeping what is done, when ``interrupt()`` turns true (an update is
        waiting); says whether every block is serialized.
        """
        for index in sorted(self._dirty):
            if interrupt is not None and interrupt():
                return False
            self._bytes[index] = self._cipher.block_to_bytes(self._blocks[index])
            self._dirty.discard(index)
        return True

    def publish(self) -> ModelSnapshot:
        """Swap in a snapshot of the current version (serializing what is still changed)."""
        if not self._dirty and self.snapshot.version == self.version:
            return self.snapshot
        self.serialize_changed()
        snapshot = ModelSnapshot(
            self.job.job_id,
            self.snapshot.fingerprint,
            self.job.key_epoch,
            self.version,
            tuple(self._bytes),
            tuple(self._block_versions),
        )
        self.snapshot = snapshot
        return snapshot

    def checkpoint(self) -> Checkpoint:
        """The current model and bookkeeping; only with an empty buffer, after ``publish``."""
        if self.buffered or self.snapshot.version != self.version or self._dirty:
            raise StateError("a checkpoint needs an empty buffer and a published model")
        with self._lock:
            state = {
                "block_versions": list(self._block_versions),
                "ledger": self._ledger.to_json(),
                "tally": self._tally.to_json(),
            }
        return Checkpoint(
            version=self.version, seq=self.seq, blocks=self.snapshot.blocks, state=state
        )
