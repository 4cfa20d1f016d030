"""The aggregation service, free of HTTP: the job, applying updates, admission, status.

Threads: the caller's (the event loop) parses and admits; one apply worker runs every
job change and every ciphertext operation in arrival order; the journal thread makes
them durable; a small pool hashes envelopes. Readers get the immutable
``ModelSnapshot`` the worker publishes and never touch a ciphertext being changed.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import crypto
from fl_server.admission import RateLimiter, SlotTable
from fl_server.errors import (
    AuthError,
    ClientRevokedError,
    IncompleteModelError,
    InvalidInputError,
    JobStateError,
    KeyEpochMismatchError,
    LayoutConflictError,
    MetricsInvalidError,
    NotFoundError,
    ServerBusyError,
    ServerError,
    StateError,
    StorageError,
    UpdateIdReusedError,
    VersionAheadError,
)
from fl_server.journal import Journal, running_future
from fl_server.receipts import UpdateReceipt
from fl_server.schemas import (
    ClientStatus,
    JobPublic,
    JobState,
    StatusPublic,
    VersionMetrics,
    timestamp_to_datetime,
)
from fl_server.settings import ServerSettings
from fl_server.snapshot import ModelSnapshot
from fl_server.state import ModelState
from fl_server.store import FileStore, JobRecord, Store
from keyauth.tokens import AccessClaims, TokenError, TokenVerifier

__all__ = ["KeyauthMaterial", "ServerService", "UpdateAck", "UpdateTicket"]

logger = logging.getLogger("fl_server")

T = TypeVar("T")

_METRIC_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_METRICS_PER_REPORT = 32
# Metrics are losses, accuracies and sample counts; a bound keeps every average finite.
_MAX_METRIC_MAGNITUDE = 1e12


@dataclass(frozen=True)
class KeyauthMaterial:
    """What the server needs from the key authority: all of it public.

    ``public_context`` is the keyless CKKS context of ``key_epoch``;
    ``verification_key_pem`` checks client access tokens offline.
    """

    public_context: bytes
    key_epoch: int
    profile: str
    verification_key_pem: str
    issuer: str = "hefl-keyauth"
    audience: str = "hefl"


@dataclass(frozen=True)
class UpdateAck:
    """The answer to an update: its receipt, and whether it was a retry of an applied one."""

    receipt: UpdateReceipt
    duplicate: bool


class UpdateTicket:
    """An admitted update: holds a place in the apply queue until the update is answered."""

    def __init__(
        self, client: AccessClaims, max_body_bytes: int, on_release: Callable[[], None]
    ) -> None:
        self.client = client
        self.max_body_bytes = max_body_bytes
        self._on_release = on_release
        self._released = False
        self._handed_over = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._on_release()

    def hand_over(self, answer: Future[Any]) -> None:
        """The queue place is now released when ``answer`` resolves."""
        self._handed_over = True
        answer.add_done_callback(lambda _: self.release())

    def __enter__(self) -> UpdateTicket:
        return self

    def __exit__(self, *exc: object) -> None:
        # Once handed to the worker, the answer releases it: the worker may still hold it.
        if not self._handed_over:
            self.release()


class _ApplyWorker:
    """One thread running tasks in submission order; ``after_task(idle)`` runs after each."""

    def __init__(self, after_task: Callable[[bool], None]) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._after_task = after_task
        self._thread = threading.Thread(target=self._run, name="hefl-apply", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = running_future()
        self._queue.put((fn, future))
        return future

    def has_work(self) -> bool:
        return not self._queue.empty()

    def close(self) -> None:
        """Run every queued task, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
            try:
                self._after_task(self._queue.empty())
            except Exception:
                logger.exception("publishing the model failed")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class ServerService:
    """The aggregation server's state and operations.

    Parameters
    ----------
    settings
        Job definition, staleness policy and admission limits.
    material
        The key authority's public context and token verification key.
    store
        Durable state; ``None`` opens a ``FileStore`` in ``settings.state_dir``.
    clock
        Seconds since the epoch; injectable for tests.

    Raises
    ------
    StateError
        The stored state is damaged or belongs to another key epoch or profile.
    crypto.CryptoError
        The public context does not fit the profile or holds a secret key.
    """

    def __init__(
        self,
        settings: ServerSettings,
        material: KeyauthMaterial,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.material = material
        self.profile = crypto.get_profile(material.profile)
        # Refuses a context with a secret key: the server must never be able to decrypt.
        self._cipher = crypto.ServerCipher(material.public_context, self.profile)
        self._verifier = TokenVerifier(
            material.verification_key_pem, issuer=material.issuer, audience=material.audience
        )
        self.policy = settings.staleness_policy()
        self._clock = clock
        self._store = (
            store
            if store is not None
            else FileStore(settings.state_dir, max_metrics_reports=settings.max_metrics_reports)
        )
        self._slots = SlotTable(settings.max_training, settings.slot_ttl, clock=clock)
        self._rate = RateLimiter(settings.client_updates_per_minute, settings.client_update_burst)
        self._lock = threading.Lock()
        self._queued = 0
        self._apply_seconds = 0.0
        self._revoked: frozenset[str] = frozenset()
        self._failure: ServerError | None = None
        # Process-lifetime counters (what the log does not hold).
        self._rejected: Counter[str] = Counter()
        self._rejected_by_client: Counter[str] = Counter()
        self._duplicates = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._seen: dict[str, tuple[str, float]] = {}
        self._metrics: deque[dict[str, Any]] = deque(maxlen=settings.max_metrics_reports)

        self._job: JobRecord | None = None
        self._layout: crypto.ModelLayout | None = None
        self._limits: crypto.EnvelopeLimits | None = None
        self._state: ModelState | None = None
        self._checkpoint_version = 0
        self._hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hefl-digest")
        self._journal = Journal(self._store)
        self._worker = _ApplyWorker(self._after_task)
        try:
            # Recovery touches ciphertexts, so it runs on the worker like every apply.
            self._worker.submit(self._recover).result()
        except BaseException:
            self._worker.close()
            self._journal.close()
            self._hasher.shutdown()
            self._store.close()
            raise
        if self._state is not None:
            self._journal.mark_durable(self._state.seq)

    # -- startup and shutdown -------------------------------------------------------------

    def _recover(self) -> None:
        store = self._store
        job = store.load_job()
        for report in store.load_metrics():
            self._metrics.append(report)
        if job is None:
            return
        if job.profile != self.profile.name or job.key_epoch != self.material.key_epoch:
            raise StateError(
                f"the stored job uses key epoch {job.key_epoch} / profile {job.profile!r} but "
                f"keyauth gave epoch {self.material.key_epoch} / {self.profile.name!r}"
            )
        self._set_job(job)
        checkpoint = store.load_checkpoint()
        if checkpoint is None:
            if next(store.read_updates(0), None) is not None:
                raise StateError("the log holds updates but there is no model checkpoint")
            return
        assert self._layout is not None
        assert self._limits is not None
        state = ModelState.from_checkpoint(
            self._cipher,
            job,
            self._layout.fingerprint,
            checkpoint,
            max_staleness=self.policy.max_staleness,
        )
        replayed = 0
        for record in store.read_updates(checkpoint.seq):
            try:
                update = crypto.update_from_bytes(record.envelope, self._limits)
                blocks = [(b.index, self._cipher.load_update_block(b.data)) for b in update.blocks]
            except crypto.CryptoError as exc:
                raise StateError(f"logged update seq {record.seq} is unreadable: {exc}") from exc
            state.apply(record, blocks)
            replayed += 1
        state.publish()
        self._state = state
        self._checkpoint_version = checkpoint.version
        logger.info(
            "recovered job %s at version %d (checkpoint %d + %d logged updates)",
            job.job_id,
            state.version,
            checkpoint.version,
            replayed,
        )

    def _set_job(self, job: JobRecord) -> None:
        try:
            layout = crypto.ModelLayout.from_json(job.layout_json)
        except crypto.LayoutError as exc:
            raise StateError(f"the stored layout is unreadable: {exc}") from exc
        self._job = job
        self._layout = layout
        self._limits = crypto.EnvelopeLimits(
            n_blocks=layout.n_blocks,
            max_block_bytes=self.profile.max_block_bytes,
            expected_fingerprint=layout.fingerprint,
        )

    def close(self) -> None:
        """Finish queued updates, checkpoint if worthwhile, and release the state directory."""
        self._worker.submit(self._final_checkpoint)
        self._worker.close()
        self._journal.close()
        self._hasher.shutdown()
        self._store.close()

    def _final_checkpoint(self) -> None:
        state = self._state
        if state is None or self._journal.failure is not None or self._failure is not None:
            return
        if state.buffered == 0 and state.version > self._checkpoint_version:
            self._publish(state, checkpoint=True)

    # -- reading --------------------------------------------------------------------------

    def job_state(self) -> JobState:
        state = self._state
        if state is None:
            return JobState.WAITING
        return JobState.DONE if state.seq >= self.settings.target_updates else JobState.TRAINING

    def job(self) -> JobPublic:
        state = self._state
        return JobPublic(
            state=self.job_state(),
            version=state.version if state is not None else 0,
            target_updates=self.settings.target_updates,
            layout_fingerprint=self._layout.fingerprint.hex() if self._layout else None,
            key_epoch=self._job.key_epoch if self._job else self.material.key_epoch,
            profile=self.profile.name,
        )

    def layout_json(self) -> bytes:
        if self._layout is None:
            raise NotFoundError("no model layout has been set yet", code="no_layout")
        return self._layout.to_json()

    def envelope_limit(self) -> int:
        """The largest model or update envelope this job's layout allows, in bytes."""
        if self._limits is None:
            raise JobStateError("set the model layout first", code="no_layout")
        return self._limits.max_total_bytes

    def snapshot(self) -> ModelSnapshot:
        """The published model; ``job_not_started`` before the initial model."""
        state = self._state
        if state is None:
            raise JobStateError("the job has no initial model yet", code="job_not_started")
        return state.snapshot

    def count_bytes_out(self, n: int) -> None:
        with self._lock:
            self._bytes_out += n

    def count_bytes_in(self, n: int) -> None:
        with self._lock:
            self._bytes_in += n

    # -- clients --------------------------------------------------------------------------

    def authenticate(self, token: str) -> AccessClaims:
        """The claims of a valid client token whose client is not revoked."""
        try:
            claims = self._verifier.verify(token)
        except TokenError as exc:
            raise AuthError(exc.detail, code=exc.code, http_status=exc.http_status) from None
        if claims.client_id in self._revoked:
            raise ClientRevokedError(f"client {claims.client_id} has been revoked")
        with self._lock:
            self._seen[claims.client_id] = (claims.client_name, self._clock())
        return claims

    def set_revoked(self, client_ids: Iterable[str]) -> None:
        """Replace the set of revoked client ids (from keyauth's revocation list)."""
        self._revoked = frozenset(client_ids)

    def acquire_slot(self, client: AccessClaims) -> float:
        """A training slot lease for ``client`` (renewed if held); its expiry."""
        self._require_training()
        return self._slots.acquire(client.client_id)

    def release_slot(self, client: AccessClaims) -> None:
        self._slots.release(client.client_id)

    def note_rejected(self, code: str, client: AccessClaims | None) -> None:
        """Count an update refused with problem ``code``."""
        with self._lock:
            self._rejected[code] += 1
            if client is not None:
                self._rejected_by_client[client.client_id] += 1

    # -- the job --------------------------------------------------------------------------

    def _require_writable(self) -> None:
        failure = self._failure or self._journal.failure
        if failure is not None:
            raise StorageError(f"{failure.detail}; restart the server to recover from its log")

    def _require_started(self) -> ModelState:
        self._require_writable()
        state = self._state
        if state is None:
            raise JobStateError("the job has no initial model yet", code="job_not_started")
        return state

    def _require_training(self, update_id: uuid.UUID | None = None) -> ModelState:
        """The model state while training; once done, only to answer a retried update."""
        state = self._require_started()
        retry = update_id is not None and state.receipt(update_id) is not None
        if self.job_state() is JobState.DONE and not retry:
            raise JobStateError(
                f"the job is done ({self.settings.target_updates} updates applied)",
                code="job_not_training",
            )
        return state

    def set_layout(self, body: bytes) -> Future[bool]:
        """Set the job's model layout; the future says whether it was new (else identical)."""
        self._require_writable()
        self.count_bytes_in(len(body))
        try:
            layout = crypto.ModelLayout.from_json(body)
        except crypto.LayoutError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        if layout.total_params > self.settings.max_params:
            raise InvalidInputError(
                f"layout of {layout.total_params} parameters exceeds FLSERVER_MAX_PARAMS "
                f"({self.settings.max_params})",
                code="layout_invalid",
                http_status=422,
            )
        if layout.block_size != self.profile.block_size:
            raise InvalidInputError(
                f"layout block_size {layout.block_size} differs from the profile's "
                f"{self.profile.block_size} values per block",
                code="layout_invalid",
                http_status=422,
            )
        return self._worker.submit(lambda: self._store_layout(layout))

    def _store_layout(self, layout: crypto.ModelLayout) -> bool:
        if self._layout is not None:
            if self._layout.fingerprint == layout.fingerprint:
                return False
            raise LayoutConflictError(
                f"the job already has layout {self._layout.fingerprint.hex()[:16]}…"
            )
        job = JobRecord(
            job_id=uuid.uuid4().hex,
            key_epoch=self.material.key_epoch,
            profile=self.profile.name,
            layout_json=layout.to_json(),
            created_at=self._clock(),
        )
        self._journal.call(lambda: self._store.save_job(job)).result()
        self._set_job(job)
        logger.info("job %s: layout %s set", job.job_id, layout.fingerprint.hex()[:16])
        return True

    def set_initial_model(self, body: bytes) -> Future[None]:
        """Start training from a client-encrypted model envelope (version 0, every block)."""
        self._require_writable()
        self.count_bytes_in(len(body))
        if self._limits is None or self._layout is None:
            raise JobStateError("set the model layout first", code="no_layout")
        if self._state is not None:
            raise JobStateError("the job already has a model", code="initial_model_exists")
        try:
            model = crypto.model_from_bytes(body, self._limits)
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        self._check_epoch(model.key_epoch)
        if model.version != 0:
            raise IncompleteModelError(f"the initial model must be version 0, not {model.version}")
        if [b.index for b in model.blocks] != list(range(self._layout.n_blocks)):
            raise IncompleteModelError(
                f"the initial model must carry all {self._layout.n_blocks} blocks, in order"
            )
        return self._worker.submit(lambda: self._store_initial_model(model))

    def _store_initial_model(self, model: crypto.EncryptedModel) -> None:
        if self._state is not None:
            raise JobStateError("the job already has a model", code="initial_model_exists")
        assert self._job is not None
        try:
            state = ModelState.initial(
                self._cipher, self._job, model, max_staleness=self.policy.max_staleness
            )
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        checkpoint = state.checkpoint()
        self._journal.call(lambda: self._store.write_checkpoint(checkpoint)).result()
        self._state = state
        self._checkpoint_version = 0
        logger.info("job %s: initial model stored, training", self._job.job_id)

    def _check_epoch(self, key_epoch: int) -> None:
        assert self._job is not None
        if key_epoch != self._job.key_epoch:
            raise KeyEpochMismatchError(
                f"encrypted under key epoch {key_epoch}; this job uses epoch {self._job.key_epoch}",
                key_epoch=self._job.key_epoch,
            )

    # -- updates --------------------------------------------------------------------------

    def admit_update(self, client: AccessClaims) -> UpdateTicket:
        """Admit an update before its body is read: job started, queue room, rate limit.

        A job that is done still admits: a retry of an applied update gets its answer.
        """
        self._require_started()
        assert self._limits is not None
        with self._lock:
            if self._queued >= self.settings.max_queued_updates:
                raise ServerBusyError(
                    f"{self._queued} updates are waiting to be applied",
                    retry_after=self._queued * self._apply_seconds,
                )
            self._rate.take(client.client_id)
            self._queued += 1
        return UpdateTicket(client, self._limits.max_total_bytes, self._release_queue_place)

    def _release_queue_place(self) -> None:
        with self._lock:
            self._queued -= 1

    def submit_update(self, ticket: UpdateTicket, body: bytes) -> Future[UpdateAck]:
        """Parse an update envelope and queue it; the future resolves once it is durable.

        Everything that needs no ciphertext is checked here; ciphertexts are validated
        and added on the apply worker, in arrival order.
        """
        self.count_bytes_in(len(body))
        state = self._require_started()
        assert self._limits is not None
        try:
            update = crypto.update_from_bytes(body, self._limits)
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        self._require_training(update.update_id)
        self._check_epoch(update.key_epoch)
        if update.base_version > state.version:
            raise VersionAheadError(
                f"base version {update.base_version} is ahead of the model (version "
                f"{state.version})",
                current_version=state.version,
            )
        digest = self._hasher.submit(_sha256, body)
        received_at = self._clock()
        ack: Future[UpdateAck] = running_future()
        ticket.hand_over(ack)
        client = ticket.client
        self._worker.submit(
            lambda: self._apply_update(client, update, body, digest, received_at, ack)
        )
        return ack

    def _apply_update(
        self,
        client: AccessClaims,
        update: crypto.EncryptedUpdate,
        body: bytes,
        digest_future: Future[bytes],
        received_at: float,
        ack: Future[UpdateAck],
    ) -> None:
        started = time.perf_counter()
        try:
            answer, durable = self._apply_one(client, update, body, digest_future, received_at)
        except ServerError as exc:
            ack.set_exception(exc)
            return
        except Exception:
            # A failure half-way through an add leaves the model unknown: stop writing.
            logger.exception("applying update %s failed", update.update_id)
            self._failure = StorageError("an update could not be applied")
            ack.set_exception(self._failure)
            return
        with self._lock:
            elapsed = time.perf_counter() - started
            self._apply_seconds = (
                elapsed if not self._apply_seconds else (0.8 * self._apply_seconds + 0.2 * elapsed)
            )
            if answer.duplicate:
                self._duplicates += 1
        self._slots.release(client.client_id)

        def answer_when_durable(done: Future[None]) -> None:
            error = done.exception()
            if error is None:
                ack.set_result(answer)
            else:
                ack.set_exception(error)

        durable.add_done_callback(answer_when_durable)

    def _apply_one(
        self,
        client: AccessClaims,
        update: crypto.EncryptedUpdate,
        body: bytes,
        digest_future: Future[bytes],
        received_at: float,
    ) -> tuple[UpdateAck, Future[None]]:
        state = self._require_started()
        digest = digest_future.result()
        # A retry is answered even once the job is done.
        prior = state.receipt(update.update_id)
        if prior is not None:
            if prior.client_id != client.client_id or prior.digest != digest:
                raise UpdateIdReusedError(
                    f"update id {update.update_id} was already used for a different update"
                )
            return UpdateAck(prior, duplicate=True), self._journal.durable(prior.seq)
        self._require_training()
        staleness, weight = state.weigh(update.base_version, self.policy)
        try:
            blocks = [(b.index, self._cipher.load_update_block(b.data)) for b in update.blocks]
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        record = state.next_record(
            update,
            client_id=client.client_id,
            client_name=client.client_name,
            staleness=staleness,
            weight=weight,
            received_at=received_at,
            digest=digest,
            envelope=body,
            buffer_size=self.settings.buffer_size,
            target_updates=self.settings.target_updates,
        )
        durable = self._journal.append(record)
        receipt = state.apply(record, blocks)
        return UpdateAck(receipt, duplicate=False), durable

    def _after_task(self, idle: bool) -> None:
        state = self._state
        if state is None or self._failure is not None or self._journal.failure is not None:
            return
        lag = state.version - state.snapshot.version
        if not lag or not (idle or lag >= self.settings.publish_max_lag):
            return
        # When idle, publish at once but give way to an update that arrives meanwhile: a
        # stream of updates is re-serialized only every publish_max_lag versions.
        forced = lag >= self.settings.publish_max_lag
        if not state.serialize_changed(None if forced else self._worker.has_work):
            return
        due = state.version - self._checkpoint_version >= self.settings.checkpoint_every
        self._publish(state, checkpoint=due and state.buffered == 0)

    def _publish(self, state: ModelState, *, checkpoint: bool) -> None:
        # Never serve a model holding an update that could still be lost.
        self._journal.wait_durable(state.seq)
        state.publish()
        if checkpoint:
            snapshot = state.checkpoint()
            self._journal.call(lambda: self._store.write_checkpoint(snapshot))
            self._checkpoint_version = state.version

    # -- metrics --------------------------------------------------------------------------

    def record_metrics(
        self, client: AccessClaims, version: int, metrics: Mapping[str, float]
    ) -> Future[None]:
        """Keep a client's plaintext evaluation of model ``version``; durable when resolved."""
        self._require_writable()
        state = self._state
        if state is None:
            raise JobStateError("the job has no model yet", code="job_not_started")
        if version > state.version:
            raise VersionAheadError(
                f"metrics for version {version}, but the model is at version {state.version}",
                current_version=state.version,
            )
        _check_metrics(metrics)
        report = {
            "client_id": client.client_id,
            "client_name": client.client_name,
            "version": version,
            "metrics": dict(metrics),
            "received_at": self._clock(),
        }

        def store() -> None:
            self._store.append_metrics(report)
            with self._lock:
                self._metrics.append(report)

        return self._journal.call(store)

    # -- status ---------------------------------------------------------------------------

    def queued_updates(self) -> int:
        with self._lock:
            return self._queued

    def slots_in_use(self) -> int:
        return self._slots.in_use()

    def status(self) -> StatusPublic:
        state = self._state
        tally = state.tally() if state is not None else None
        with self._lock:
            rejected = dict(self._rejected)
            rejected_by_client = dict(self._rejected_by_client)
            seen = dict(self._seen)
            reports = list(self._metrics)
            bytes_in, bytes_out = self._bytes_in, self._bytes_out
            duplicates, queued = self._duplicates, self._queued
        report_counts = Counter(str(r["client_id"]) for r in reports)
        client_ids = set(seen) | set(rejected_by_client) | set(report_counts)
        if tally is not None:
            client_ids |= set(tally.clients)
        clients = {}
        for cid in sorted(client_ids):
            applied = tally.clients.get(cid) if tally is not None else None
            name, last_seen = seen.get(cid, (None, None))
            # Names the server saw before a restart come from the log.
            name = name or (applied.client_name if applied else None)
            last_update = applied.last_update_at if applied else None
            clients[cid] = ClientStatus(
                client_name=name,
                updates_applied=applied.updates_applied if applied else 0,
                updates_rejected=rejected_by_client.get(cid, 0),
                metrics_reports=report_counts.get(cid, 0),
                last_seen=timestamp_to_datetime(last_seen) if last_seen is not None else None,
                last_update_at=timestamp_to_datetime(last_update) if last_update else None,
            )
        seq = state.seq if state is not None else 0
        return StatusPublic(
            state=self.job_state(),
            version=state.version if state is not None else 0,
            published_version=state.snapshot.version if state is not None else 0,
            target_updates=self.settings.target_updates,
            key_epoch=self._job.key_epoch if self._job else self.material.key_epoch,
            profile=self.profile.name,
            layout_fingerprint=self._layout.fingerprint.hex() if self._layout else None,
            staleness_policy=self.policy.describe(),
            buffer_size=self.settings.buffer_size,
            updates_applied=seq,
            updates_buffered=state.buffered if state is not None else 0,
            updates_rejected=rejected,
            duplicates=duplicates,
            receipts_kept=state.receipts_kept() if state is not None else 0,
            staleness_histogram=dict(sorted(tally.staleness.items())) if tally else {},
            mean_weight=tally.weight_sum / seq if tally is not None and seq else None,
            clients=clients,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            slots_in_use=self._slots.in_use(),
            max_training=self.settings.max_training,
            queued_updates=queued,
            metrics=_metrics_by_version(reports),
        )


def _check_metrics(metrics: Mapping[str, float]) -> None:
    if not metrics:
        raise MetricsInvalidError("report at least one metric")
    if len(metrics) > _MAX_METRICS_PER_REPORT:
        raise MetricsInvalidError(f"at most {_MAX_METRICS_PER_REPORT} metrics per report")
    for name, value in metrics.items():
        if not _METRIC_NAME.fullmatch(name):
            raise MetricsInvalidError(
                "metric names are 1-64 characters of letters, digits and _ . : -"
            )
        if isinstance(value, bool) or not abs(value) <= _MAX_METRIC_MAGNITUDE:
            raise MetricsInvalidError(
                f"metric {name!r} must be a number of magnitude at most {_MAX_METRIC_MAGNITUDE:g}"
            )
    n_samples = metrics.get("n_samples")
    if n_samples is not None and (not isinstance(n_samples, int) or n_samples < 0):
        raise MetricsInvalidError("n_samples must be a non-negative integer")


def _metrics_by_version(reports: list[dict[str, Any]]) -> list[VersionMetrics]:
    by_version: dict[int, list[dict[str, Any]]] = {}
    for report in reports:
        by_version.setdefault(int(report["version"]), []).append(report)
    out = []
    for version in sorted(by_version):
        group = by_version[version]
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        samples = 0
        for report in group:
            metrics = report["metrics"]
            n = metrics.get("n_samples")
            weight = float(n) if isinstance(n, int) and n > 0 else 1.0
            samples += n if isinstance(n, int) else 0
            for name, value in metrics.items():
                if name == "n_samples":
                    continue
                sums[name] = sums.get(name, 0.0) + weight * float(value)
                weights[name] = weights.get(name, 0.0) + weight
        mean = {name: sums[name] / weights[name] for name in sorted(sums)}
        out.append(
            VersionMetrics(version=version, reports=len(group), n_samples=samples, mean=mean)
        )
    return out
