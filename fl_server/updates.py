"""The update pipeline: admit, read, parse, apply in arrival order, answer once durable."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import crypto
from fl_server.admission import SlotTable, UpdateQueue, UpdateTicket
from fl_server.domain import BodyReader, UpdateAck, body_chunks
from fl_server.errors import (
    EnvelopeMalformedError,
    InvalidInputError,
    RoundWaitingError,
    SamplesInvalidError,
    ServerError,
    StorageError,
    UpdateIdReusedError,
    VersionAheadError,
)
from fl_server.job import JobLifecycle
from fl_server.jobspec import JobConfig
from fl_server.journal import Journal, running_future
from fl_server.parsing import client_input
from fl_server.spool import SpooledBlocks, UpdateSpool
from fl_server.traffic import Traffic
from fl_server.worker import ApplyWorker
from hefl_wire import AccessClaims

__all__ = ["UpdatePipeline"]

logger = logging.getLogger("fl_server")


# Declared rows above this are refused: no hospital table is that large, and a bound
# keeps one hospital's declaration from dwarfing every other's by accident.
MAX_SAMPLES = 10**9


def parse_samples(header: str | None) -> int | None:
    """The rows an ``X-Hefl-Samples`` header declares; ``None`` without one.

    Raises
    ------
    SamplesInvalidError
        Not a whole number in ``1..MAX_SAMPLES``.
    """
    if header is None:
        return None
    text = header.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not (
        1 <= int(text) <= MAX_SAMPLES
    ):
        raise SamplesInvalidError(
            f"X-Hefl-Samples must be the training rows behind the update, a whole number "
            f"in 1..{MAX_SAMPLES}; got {header[:40]!r}"
        )
    return int(text)


@dataclass(frozen=True)
class _Arrival:
    """An update checked on the caller's thread, on its way to the apply worker.

    ``update`` is its head (no blocks); the envelope is in ``spool``, read back block by
    block (``blocks``), and closed once the update is logged or refused.
    """

    client: AccessClaims
    update: crypto.EncryptedUpdate
    spool: UpdateSpool = field(repr=False)
    digest: Future[bytes]
    received_at: float
    samples: int | None = None
    keep_slot: bool = False

    def blocks(self) -> SpooledBlocks:
        """The update's blocks, read from the spool one at a time (and again, if large)."""
        return self.spool.reopen()


class UpdatePipeline:
    """Takes clients' encrypted updates into the model, each exactly once.

    Everything that needs no ciphertext is checked on the caller's thread; the apply
    worker has the model's shards validate and add ciphertexts, in arrival order. An update is
    answered once its log record is durable; a retry gets the first answer.

    Parameters
    ----------
    config
        The job's staleness policy, ``buffer_size`` and ``target_updates``.
    lifecycle
        The job and its model state.
    queue, slots
        Admission (queue places, rate limits) and the training slots an update releases.
    journal, worker, traffic, clock
        Durable log, the apply thread, byte counters, seconds since the epoch.
    after_apply
        Runs on the worker after each applied update (the stop rules, the integrity search).
    check_client
        Refuses a client whose updates the job does not take (quarantined), before its
        body is read and again before its update is applied.
    spool_dir
        Where update bodies are spooled as they arrive (the job's directory); ``None``:
        the system's temporary directory.
    """

    def __init__(
        self,
        config: JobConfig,
        lifecycle: JobLifecycle,
        *,
        queue: UpdateQueue,
        slots: SlotTable,
        journal: Journal,
        worker: ApplyWorker,
        traffic: Traffic,
        clock: Callable[[], float] = time.time,
        after_apply: Callable[[], None] = lambda: None,
        check_client: Callable[[AccessClaims], None] = lambda client: None,
        spool_dir: Path | None = None,
    ) -> None:
        self._config = config
        self._lifecycle = lifecycle
        self._queue = queue
        self._slots = slots
        self._journal = journal
        self._worker = worker
        self._traffic = traffic
        self._clock = clock
        self._after_apply = after_apply
        self._check_client = check_client
        self._spool_dir = spool_dir
        self._hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hefl-digest")
        # Process-lifetime counters (what the log does not hold).
        self._lock = threading.Lock()
        self._rejected: Counter[str] = Counter()
        self._rejected_by_client: Counter[str] = Counter()
        self._duplicates = 0

    def close(self) -> None:
        """Stop the hashing pool (after the worker has run every queued update)."""
        self._hasher.shutdown()

    async def receive(
        self,
        client: AccessClaims,
        read_body: BodyReader,
        samples: str | None = None,
        *,
        keep_slot: bool = False,
    ) -> UpdateAck:
        """Admit ``client``'s update, spool its body as it arrives, and answer once it is
        durable.

        ``samples`` is the ``X-Hefl-Samples`` header: the training rows behind the update
        (``fl_server.weighting``). ``keep_slot``: the acknowledged update leaves the
        client's training slot held (its answer renews it for the next round) instead of
        giving it back. Every refusal on the way is counted by its problem code.
        """
        try:
            rows = parse_samples(samples)
            with self.admit(client) as ticket:
                spool = await self.spool(read_body, ticket.max_body_bytes)
                return await asyncio.wrap_future(self.submit(ticket, spool, rows, keep_slot))
        except ServerError as exc:
            self._note_rejected(exc.code, client)
            raise

    def admit(self, client: AccessClaims) -> UpdateTicket:
        """Admit an update before its body is read: job started, queue room, rate limit.

        A job that is paused or done still admits: a retry of an applied update gets its
        answer (any other is refused once its id is known).
        """
        self._lifecycle.require_started()
        self._check_client(client)
        limits = self._lifecycle.limits
        assert limits is not None
        return self._queue.admit(client, limits.max_total_bytes)

    async def spool(self, read_body: BodyReader, limit: int) -> UpdateSpool:
        """Read an update body into a spool file as it arrives, checking its envelope on
        the way (no ciphertext work); the spool is removed if the body is refused."""
        limits = self._lifecycle.limits
        assert limits is not None
        spool = UpdateSpool(limits, self._spool_dir)
        try:
            with client_input("the update envelope", EnvelopeMalformedError):
                try:
                    async for chunk in body_chunks(read_body, limit):
                        spool.write(chunk)
                except crypto.CryptoError as exc:
                    raise InvalidInputError.from_crypto(exc) from exc
        except BaseException:
            spool.close()
            raise
        return spool

    def submit(
        self,
        ticket: UpdateTicket,
        spool: UpdateSpool,
        samples: int | None = None,
        keep_slot: bool = False,
    ) -> Future[UpdateAck]:
        """Check a spooled update's head and queue it; the future resolves once it is
        durable. The spool is the pipeline's from here: closed once logged or refused."""
        try:
            self._traffic.count_in(spool.size)
            state = self._lifecycle.require_started()
            with client_input("the update envelope", EnvelopeMalformedError):
                try:
                    update = spool.finish()
                except crypto.CryptoError as exc:
                    raise InvalidInputError.from_crypto(exc) from exc
            self._lifecycle.require_training(update.update_id)
            self._lifecycle.check_epoch(update.key_epoch)
            if update.base_version > state.version:
                raise VersionAheadError(
                    f"base version {update.base_version} is ahead of the model (version "
                    f"{state.version})",
                    current_version=state.version,
                )
        except BaseException:
            spool.close()
            raise
        arrival = _Arrival(
            ticket.client,
            update,
            spool,
            self._hasher.submit(spool.digest),
            self._clock(),
            samples,
            keep_slot,
        )
        ack: Future[UpdateAck] = running_future()
        ticket.hand_over(ack)
        self._worker.submit(lambda: self._apply(arrival, ack))
        return ack

    def counts(self) -> tuple[dict[str, int], dict[str, int], int]:
        """Updates refused by problem code and by client, and retries answered, since start."""
        with self._lock:
            return dict(self._rejected), dict(self._rejected_by_client), self._duplicates

    def _note_rejected(self, code: str, client: AccessClaims | None) -> None:
        with self._lock:
            self._rejected[code] += 1
            if client is not None:
                self._rejected_by_client[client.client_id] += 1

    def _apply(self, arrival: _Arrival, ack: Future[UpdateAck]) -> None:
        started = time.perf_counter()
        try:
            answer, durable = self._apply_one(arrival)
        except ServerError as exc:
            self._drop_spool(arrival)
            ack.set_exception(exc)
            return
        except Exception:
            # A failure half-way through an add leaves the model unknown: stop writing.
            logger.exception("applying update %s failed", arrival.update.update_id)
            failure = StorageError("an update could not be applied")
            self._lifecycle.fail(failure)
            self._drop_spool(arrival)
            ack.set_exception(failure)
            return
        # the journal copies the spool into the log: it is dropped once that is durable
        durable.add_done_callback(lambda _: arrival.spool.close())
        self._queue.applied_in(time.perf_counter() - started)
        if answer.duplicate:
            with self._lock:
                self._duplicates += 1
        if not arrival.keep_slot:
            self._slots.release(arrival.client.client_id)

        def answer_when_durable(done: Future[None]) -> None:
            error = done.exception()
            if error is None:
                ack.set_result(answer)
            else:
                ack.set_exception(error)

        durable.add_done_callback(answer_when_durable)

    def _drop_spool(self, arrival: _Arrival) -> None:
        """Close a refused update's spool once nothing reads it: after its digest, and
        after every log write submitted so far (one may be copying it)."""
        arrival.digest.add_done_callback(lambda _: self._journal.call(arrival.spool.close))

    def _apply_one(self, arrival: _Arrival) -> tuple[UpdateAck, Future[None]]:
        client, update = arrival.client, arrival.update
        state = self._lifecycle.require_started()
        self._check_client(client)  # quarantined while its update was queued
        digest = arrival.digest.result()
        # A retry is answered even once the job is done.
        prior = state.receipt(update.update_id)
        if prior is not None:
            if prior.client_id != client.client_id or prior.digest != digest:
                raise UpdateIdReusedError(
                    f"update id {update.update_id} was already used for a different update"
                )
            return UpdateAck(prior, duplicate=True), self._journal.durable(prior.seq)
        self._lifecycle.require_training()
        rounds = self._config.rounds
        if rounds:
            round_, contributors = state.round_contributors()
            if client.client_id in contributors:
                raise RoundWaitingError(
                    f"this hospital's update is already in round {round_}; pull the next "
                    "version and train on it",
                    retry_after=1.0,
                )
        staleness, weight = state.weigh(
            update.base_version,
            self._config.weigher,
            client_id=client.client_id,
            samples=arrival.samples,
            deferred=rounds,
        )
        try:
            # Validated by the shards that own the blocks, read from the spool one at a time:
            # this process does no ciphertext work.
            blocks = state.stage(arrival.blocks())
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        record = state.next_record(
            update,
            client_id=client.client_id,
            client_name=client.client_name,
            staleness=staleness,
            weight=weight,
            received_at=arrival.received_at,
            digest=digest,
            envelope=b"",
            buffer_size=self._config.buffer_size,
            target_updates=self._config.target_updates,
            samples=arrival.samples,
            deferred=rounds,
        )
        record = replace(record, source=arrival.spool)
        durable = self._journal.append(record)
        receipt = state.apply(record, blocks)
        self._after_apply()
        return UpdateAck(receipt, duplicate=False), durable
