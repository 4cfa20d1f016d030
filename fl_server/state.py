"""The encrypted global model and what the log implies: versions, buffer, receipts, repairs.

``ModelState`` is the one place that decides how the model's ciphertexts change; the
ciphertexts themselves live in a ``ShardBackend`` (``fl_server.shards``), in this process
or in worker processes. The live server and recovery both drive it with the same log
records (updates, repairs, releases), so a replayed log rebuilds the model that was
acknowledged, repairs included. Only the apply worker calls its mutating methods; other
threads read the immutable ``ModelSnapshot`` it publishes and copies of its counters.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import crypto
from fl_server.errors import StateError, TooStaleError, VersionAheadError
from fl_server.history import UpdateHistory
from fl_server.hospital_privacy import UpdateNoise
from fl_server.receipts import ReceiptLedger, UpdateReceipt
from fl_server.repairs import RepairBook, RepairSummary
from fl_server.rounds import round_weights
from fl_server.shards import BlockSource, ModelBlocks, ShardBackend, Staged
from fl_server.snapshot import BlockWriter, ModelSnapshot, PublishedBlocks, ReceivedModel
from fl_server.store import Checkpoint, JobRecord, ReleaseRecord, RepairRecord, UpdateRecord
from fl_server.tally import UpdateTally
from fl_server.weighting import UpdateWeigher

# How many blocks one interruptible step of publishing serializes.
_SERIALIZE_BATCH = 64

__all__ = ["ModelState"]


class ModelState:
    """The model (in its ``backend``), the FedBuff buffer and the bookkeeping of applied updates.

    Use ``initial`` or ``from_checkpoint`` to build one. Not thread-safe for writers: one
    thread (the apply worker) calls ``apply``/``publish``/``checkpoint``; ``snapshot``,
    ``version`` and ``tally`` may be read from any thread. ``max_staleness`` is the
    staleness policy's: receipts of updates that could no longer be applied are forgotten
    (see ``ReceiptLedger``). ``repair_window`` is how many versions back an update may be
    removed (``UpdateHistory``).
    """

    def __init__(
        self,
        backend: ShardBackend,
        job: JobRecord,
        snapshot: ModelSnapshot,
        *,
        seq: int,
        ledger: ReceiptLedger,
        tally: UpdateTally,
        max_staleness: int,
        book: RepairBook | None = None,
        repair_window: int = 16,
        noise: UpdateNoise | None = None,
        directory: Path | None = None,
    ) -> None:
        self.backend = backend
        self.directory = directory
        self._profile = backend.profile
        # Hospital-level DP: the noise each applied update brings, and the buffered
        # updates whose noise goes into the model with the buffer.
        self.noise = noise
        self._noised: list[UpdateRecord] = []
        self.job = job
        self._block_versions = list(snapshot.block_versions)
        # The blocks the buffer (in the backend) touches.
        self._buffer: set[int] = set()
        # The open round's updates, staged unweighted until it closes (``fl_server.rounds``),
        # and in recovery the closed round's records the checkpoint holds, until weighed.
        self._round: list[tuple[UpdateRecord, Staged]] = []
        self._remembered: list[UpdateRecord] = []
        # The newest serialized bytes of each block, in files (the published ones, then
        # those serialized since); ``_dirty`` blocks changed since they were serialized.
        self._written = BlockWriter(_published(snapshot.blocks, directory), directory)
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self.snapshot = replace(snapshot, blocks=self._written.base)
        self.version = snapshot.version
        self.seq = seq
        self.buffered = 0
        self._ledger = ledger
        self._tally = tally
        self._max_staleness = max_staleness
        self._book = book or RepairBook()
        self.history = UpdateHistory(repair_window)
        # The seq after which the log is under the current key epoch (a key rotation):
        # no older update can be subtracted from this model.
        self.rotated_at_seq = 0

    @classmethod
    def initial(
        cls,
        backend: ShardBackend,
        job: JobRecord,
        model: crypto.EncryptedModel | ReceivedModel,
        *,
        max_staleness: int,
        repair_window: int = 16,
        noise: UpdateNoise | None = None,
        directory: Path | None = None,
    ) -> ModelState:
        """Version 0 from a client's initial model envelope (every block, model scale); a
        ``ReceivedModel``'s file of blocks becomes the published model's as it is.

        The published model's blocks go to files in ``directory`` (the job's; ``None``:
        the system's temporary directory), as every later version's.

        Raises
        ------
        crypto.CryptoError
            A block that is not a valid model-scale ciphertext of this context.
        """
        if isinstance(model, ReceivedModel):
            data = model.blocks
            _install(backend, data)
        else:
            _install(backend, [b.data for b in model.blocks])
            data = PublishedBlocks.of((b.data for b in model.blocks), directory)
        snapshot = ModelSnapshot(
            job.job_id, model.fingerprint, job.key_epoch, 0, data, (0,) * len(data)
        )
        return cls(
            backend,
            job,
            snapshot,
            seq=0,
            ledger=ReceiptLedger(),
            tally=UpdateTally(),
            max_staleness=max_staleness,
            repair_window=repair_window,
            noise=noise,
            directory=directory,
        )

    @classmethod
    def from_checkpoint(
        cls,
        backend: ShardBackend,
        job: JobRecord,
        fingerprint: bytes,
        checkpoint: Checkpoint,
        *,
        max_staleness: int,
        repair_window: int = 16,
        noise: UpdateNoise | None = None,
        directory: Path | None = None,
    ) -> ModelState:
        """The state a checkpoint recorded; ``StateError`` if it does not fit the job."""
        try:
            _install(backend, checkpoint.blocks)
            raw = checkpoint.state
            block_versions = tuple(int(v) for v in raw["block_versions"])
            raw_ledger = raw["ledger"]
            if isinstance(raw_ledger, list):  # checkpoints before receipts were forgotten
                raw_ledger = {"receipts": raw_ledger, "forgotten_below": 0}
            ledger = ReceiptLedger.from_json(raw_ledger)
            tally = UpdateTally.from_json(raw["tally"])
            book = RepairBook.from_json(raw.get("integrity"))
            rotated_at_seq = int(raw.get("rotated_at_seq", 0))
        except (crypto.CryptoError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"the checkpoint does not fit this job: {exc}") from exc
        if len(block_versions) != len(checkpoint.blocks):
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
            backend,
            job,
            snapshot,
            seq=checkpoint.seq,
            ledger=ledger,
            tally=tally,
            max_staleness=max_staleness,
            book=book,
            repair_window=repair_window,
            noise=noise,
            directory=directory,
        )
        state.rotated_at_seq = rotated_at_seq
        state._forget_old_receipts()
        return state

    def rekeyed(self, job: JobRecord, model: crypto.EncryptedModel) -> ModelState:
        """This model re-encrypted under ``job``'s (new) key epoch, at the next version.

        ``model`` is the whole model as a hospital re-encrypted it (checked against the
        layout by the caller); receipts, counters and repairs carry over; the update
        history does not (its updates are under the old key). Needs an empty buffer. The
        new state takes over the backend: this one is not to be used after.

        Raises
        ------
        crypto.CryptoError
            A block that is not a valid model-scale ciphertext of this context.
        """
        if self.buffered:
            raise StateError("a key rotation needs an empty buffer")
        version = self.version + 1
        _install(self.backend, [b.data for b in model.blocks])
        data = PublishedBlocks.of((b.data for b in model.blocks), self.directory)
        snapshot = ModelSnapshot(
            job.job_id, model.fingerprint, job.key_epoch, version, data, (version,) * len(data)
        )
        with self._lock:
            ledger = ReceiptLedger.from_json(self._ledger.to_json())
            tally, book = self._tally.copy(), self._book.copy()
        state = ModelState(
            self.backend,
            job,
            snapshot,
            seq=self.seq,
            ledger=ledger,
            tally=tally,
            max_staleness=self._max_staleness,
            book=book,
            repair_window=self.history.window,
            noise=self.noise,
            directory=self.directory,
        )
        state.rotated_at_seq = self.seq
        state._forget_old_receipts()
        return state

    # -- reading ------------------------------------------------------------------------

    @property
    def n_blocks(self) -> int:
        return len(self._block_versions)

    def receipt(self, update_id: uuid.UUID) -> UpdateReceipt | None:
        """The first answer to an applied update, or to one a repair removed since."""
        with self._lock:
            found = self._ledger.get(update_id)
            return found if found is not None else self._book.receipt(update_id)

    def book(self) -> RepairBook:
        """A copy of what repairs did: removed updates, quarantined clients."""
        with self._lock:
            return self._book.copy()

    def is_quarantined(self, client_id: str) -> bool:
        with self._lock:
            return client_id in self._book.quarantined

    @property
    def entries(self) -> int:
        """How many repairs and releases the model has seen (numbers the next one)."""
        return self._book.entries

    @property
    def last_repair_version(self) -> int:
        """The version the newest repair made (0: none)."""
        return self._book.last_repair_version

    def receipts_kept(self) -> int:
        with self._lock:
            return len(self._ledger)

    def tally(self) -> UpdateTally:
        with self._lock:
            return self._tally.copy()

    # -- deciding -----------------------------------------------------------------------

    def round_contributors(self) -> tuple[int, tuple[str, ...]]:
        """The open round (the version it builds on) and the clients whose update is in."""
        with self._lock:
            return self.version, tuple(r.client_id for r, _ in self._round)

    def weigh(
        self,
        base_version: int,
        weigher: UpdateWeigher,
        *,
        client_id: str,
        samples: int | None,
        deferred: bool = False,
    ) -> tuple[int, float]:
        """Staleness and applied weight of ``client_id``'s update against ``base_version``.

        ``samples`` are the rows it declared. A ``deferred`` update (a round's) gets its
        provisional weight: its FedAvg share of the round so far.

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
        policy = weigher.staleness
        profile = self._profile
        weight: float | None
        if deferred:
            weight = None
            if staleness <= policy.max_staleness:
                with self._lock:
                    rows = [r.samples for r, _ in self._round]
                weight = round_weights([*rows, samples], profile)[-1]
        else:
            with self._lock:
                known = self._tally.shares()
                applied = self.seq
            weight = weigher.weight(
                staleness=staleness,
                client_id=client_id,
                samples=samples,
                known=known,
                applied=applied,
            )
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
        target_updates: int | None,
        samples: int | None = None,
        deferred: bool = False,
    ) -> UpdateRecord:
        """The log record for the next update: its ``seq``, version and whether it flushes.

        The update that reaches ``target_updates`` flushes the buffer: it is the job's last.
        """
        seq = self.seq + 1
        last = target_updates is not None and seq >= target_updates
        flush = self.buffered + 1 >= buffer_size or last
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
            samples=samples,
            deferred=deferred,
            noise_seed=UpdateNoise.draw_seed() if self.noise is not None else None,
        )

    # -- changing -----------------------------------------------------------------------

    def stage(self, blocks: Iterable[tuple[int, bytes]] | BlockSource) -> Staged:
        """An update's blocks, validated by the backend for ``apply`` or ``repair``.

        A large update read from a ``BlockSource`` (its spool) is not held loaded: it is
        read again when it is added (``Staged``).

        Raises
        ------
        crypto.CryptoError
            A block that is not a valid update ciphertext; nothing is staged.
        """
        return self.backend.stage(blocks)

    def apply(self, record: UpdateRecord, blocks: Staged) -> UpdateReceipt:
        """Add ``record``'s weighted blocks to the buffer; add the buffer to the model on a flush.

        ``blocks`` are the record's update blocks, staged (``stage``: so validated); they
        are consumed. A ``deferred`` record waits unweighted in its round; the
        round's last one closes it (``_close_round``) and is answered its applied weight.
        """
        if record.seq != self.seq + 1 or record.version != self.version + 1:
            raise StateError(
                f"update record seq {record.seq} / version {record.version} does not follow "
                f"seq {self.seq} / version {self.version}: the log is out of order"
            )
        self._weigh_remembered()
        receipt = _receipt(record)
        if record.deferred:
            with self._lock:
                self._round.append((record, blocks))
        elif record.flush:
            self._weight_into_model(blocks, record)
        else:
            self._weight_into_buffer(blocks, record)
        with self._lock:
            self.seq = record.seq
            self._ledger.add(receipt)
            if not record.deferred:
                self._tally.count(record)
        if not record.deferred:
            self.history.add(record)
        if not record.flush:
            with self._lock:
                self.buffered += 1
            return receipt
        closed = self._close_round()
        self._add_buffer()
        with self._lock:
            self._buffer_applied(record.version)
        self.history.trim(self.version)
        self._forget_old_receipts()
        return closed.get(record.update_id, receipt)

    def _weight_into_buffer(self, blocks: Staged, record: UpdateRecord) -> None:
        if self.noise is not None:
            self._noised.append(record)  # at its applied weight (a round's, once closed)
        self.backend.buffer(blocks, record.weight)
        self._buffer.update(blocks.indices)

    def _weight_into_model(self, blocks: Staged, record: UpdateRecord) -> None:
        # The buffer's last update goes straight into the model, block by block: no buffer
        # of ciphertexts holds it whole (with one update per buffer, none ever does).
        # Additions are exact in the ring, so the model is bit for bit the buffered one's.
        if self.noise is not None:
            self._noised.append(record)
        self.backend.add(blocks, record.weight)
        self._buffer.update(blocks.indices)

    def _close_round(self) -> dict[uuid.UUID, UpdateReceipt]:
        """Weigh the open round's updates (``round_weights``) into the buffer; their
        receipts with the applied weights. Nothing to do without a round."""
        if not self._round:
            return {}
        records = _weighed([r for r, _ in self._round], self._profile)
        for record, (_, blocks) in zip(records, self._round, strict=True):
            self._weight_into_buffer(blocks, record)
        receipts = {r.update_id: _receipt(r) for r in records}
        with self._lock:
            self._round.clear()
            for record in records:
                self._tally.count(record)
                self._ledger.replace(receipts[record.update_id])
        for record in records:
            self.history.add(record)
        return receipts

    def _weigh_remembered(self) -> None:
        """Recovery: the closed round of remembered records, weighed as it was applied."""
        if self._remembered:
            for record in _weighed(self._remembered, self._profile):
                self.history.add(record)
            self._remembered.clear()
            self.history.trim(self.version)

    def remember(self, record: UpdateRecord) -> None:
        """Recovery: an update the checkpoint holds, still in the log for repairs (unless
        it is from before a key rotation).

        A round's records are kept until their round is known whole (its last record, or
        a record of another version), then weighed as they were applied.
        """
        if record.seq <= self.rotated_at_seq:
            return
        if self._remembered and self._remembered[0].version != record.version:
            self._weigh_remembered()
        if record.deferred:
            self._remembered.append(record)
            if record.flush:
                self._weigh_remembered()
            return
        self.history.add(record)
        self.history.trim(self.version)

    def repair(self, record: RepairRecord, removed: Sequence[Staged]) -> RepairSummary:
        """Subtract each removed update at the weight it was applied at; the version moves on.

        A partly filled buffer is added to the model first (its updates name the version
        it makes), so the repaired model is ``record.version``. ``removed`` holds the
        blocks of each of ``record.removed``, staged (and so validated); they are consumed.
        """
        self._weigh_remembered()
        if record.entry != self._book.entries + 1 or record.after_seq != self.seq:
            raise StateError(
                f"repair entry {record.entry} after seq {record.after_seq} does not follow "
                f"entry {self._book.entries} at seq {self.seq}: the log is out of order"
            )
        version_before = self.version
        version = self.version + (2 if self.buffered else 1)
        if record.version != version or len(removed) != len(record.removed):
            raise StateError(
                f"repair entry {record.entry} makes version {record.version} of "
                f"{len(record.removed)} updates, not version {version}"
            )
        self.flush_buffer()
        changed: set[int] = set()
        for update, blocks in zip(record.removed, removed, strict=True):
            self.backend.subtract(blocks, update.weight)
            changed.update(blocks.indices)
        with self._lock:
            for index in changed:
                self._block_versions[index] = version
            self._dirty.update(changed)
            self.version = version
            summary = self._book.apply_repair(record, version_before)
        self.history.trim(version)
        self._forget_old_receipts()
        return summary

    def release(self, record: ReleaseRecord) -> None:
        """The client of ``record`` is no longer quarantined."""
        if record.entry != self._book.entries + 1 or record.after_seq != self.seq:
            raise StateError(
                f"release entry {record.entry} after seq {record.after_seq} does not follow "
                f"entry {self._book.entries} at seq {self.seq}: the log is out of order"
            )
        with self._lock:
            self._book.apply_release(record)

    def flush_buffer(self) -> bool:
        """Add a partly filled buffer to the model (the job is done); whether there was one.

        The buffered updates' records name the version they make (``version + 1``): it is
        reached now, as it would have been by the buffer's last update. Recovery does the
        same for a done job, so a replay rebuilds this model.
        """
        if not self.buffered:
            return False
        self._close_round()
        self._add_buffer()
        with self._lock:
            self._buffer_applied(self.version + 1)
        self.history.trim(self.version)
        self._forget_old_receipts()
        return True

    def _add_buffer(self) -> None:
        if self._buffer:
            self.backend.flush()
        if self.noise is not None and self._noised:
            # one draw per applied update, into every block (FedBuff K > 1: K draws)
            self.backend.noise(self.noise.draws(self._noised))

    def _buffer_applied(self, version: int) -> None:
        # Under the lock: the buffer is in the model, which is now at ``version``.
        changed = set(range(len(self._block_versions))) if self._noised else set(self._buffer)
        for index in changed:
            self._block_versions[index] = version
        self._dirty.update(changed)
        self._noised.clear()
        self._buffer.clear()
        self.buffered = 0
        self.version = version

    def _forget_old_receipts(self) -> None:
        """Forget receipts no resend needs: ``weigh`` refuses updates based this far back."""
        with self._lock:
            self._ledger.forget_below(self.version - self._max_staleness)

    def serialize_changed(self, interrupt: Callable[[], bool] | None = None) -> bool:
        """Serialize the blocks changed since they were last serialized.

        Stops early, keeping what is done, when ``interrupt()`` turns true (an update is
        waiting); says whether every block is serialized. Each step takes blocks spread
        over the model, so that every shard of the backend serializes its part at once.
        """
        dirty = sorted(self._dirty)
        steps = max(1, -(-len(dirty) // _SERIALIZE_BATCH))
        for step in range(steps):
            if interrupt is not None and interrupt():
                return False
            batch = dirty[step::steps]
            for index, data in zip(batch, self.backend.serialize(batch), strict=True):
                self._written.write(index, data)
            self._dirty.difference_update(batch)
        return True

    def publish(self) -> ModelSnapshot:
        """Swap in a snapshot of the current version (serializing what is still changed)."""
        self._weigh_remembered()
        if not self._dirty and self.snapshot.version == self.version:
            return self.snapshot
        self.serialize_changed()
        snapshot = ModelSnapshot(
            self.job.job_id,
            self.snapshot.fingerprint,
            self.job.key_epoch,
            self.version,
            self._written.publish(),
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
                "integrity": self._book.to_json(),
                "rotated_at_seq": self.rotated_at_seq,
            }
        oldest = self.history.oldest_seq()
        return Checkpoint(
            version=self.version,
            seq=self.seq,
            blocks=self.snapshot.blocks,
            state=state,
            # The log keeps the updates of the repair window, even those this checkpoint holds.
            drop_through=None if oldest is None else oldest - 1,
        )


def _install(backend: ShardBackend, blocks: Sequence[bytes]) -> None:
    """Make ``blocks`` (every block, model scale) the backend's model; ``CryptoError`` if
    one is not valid, leaving the backend's model as it was."""
    if backend.n_blocks != len(blocks):
        backend.open(len(blocks))
    backend.install(backend.stage(ModelBlocks(blocks), model=True))


def _published(blocks: Sequence[bytes], directory: Path | None) -> PublishedBlocks:
    """``blocks`` in files (a checkpoint's, read into memory, are written out)."""
    return blocks if isinstance(blocks, PublishedBlocks) else PublishedBlocks.of(blocks, directory)


def _receipt(record: UpdateRecord) -> UpdateReceipt:
    return UpdateReceipt(
        update_id=record.update_id,
        client_id=record.client_id,
        seq=record.seq,
        version=record.version,
        staleness=record.staleness,
        weight=record.weight,
        digest=record.digest,
    )


def _weighed(records: Sequence[UpdateRecord], profile: crypto.CkksProfile) -> list[UpdateRecord]:
    """A closed round's records with the weights it was applied at (``round_weights``)."""
    weights = round_weights([r.samples for r in records], profile)
    return [replace(r, weight=w) for r, w in zip(records, weights, strict=True)]
