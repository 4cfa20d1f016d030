"""The job's lifecycle: layout, initial model, the live model state, waiting → training → done."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future

import crypto
from fl_server.domain import BodyReader, JobState, JobView, LayoutSet
from fl_server.errors import (
    IncompleteModelError,
    InitialModelExistsError,
    InvalidInputError,
    JobNotStartedError,
    JobNotTrainingError,
    KeyEpochMismatchError,
    LayoutConflictError,
    LayoutInvalidError,
    LayoutNotFoundError,
    NoLayoutError,
    ServerError,
    StorageError,
)
from fl_server.journal import Journal
from fl_server.recovery import OpenJob, open_job, recover
from fl_server.settings import ServerSettings
from fl_server.snapshot import ModelSnapshot
from fl_server.state import ModelState
from fl_server.store import JobRecord, Store
from fl_server.traffic import Traffic
from fl_server.worker import ApplyWorker

__all__ = ["JobLifecycle"]

logger = logging.getLogger("fl_server")


class JobLifecycle:
    """The job and its model: set up, recovered, guarded, and viewed.

    The job and the model state are set on the apply worker only; any thread may read
    them (each is one reference, swapped whole).

    Parameters
    ----------
    settings
        ``target_updates``, ``max_params`` and the layout body limit.
    key_epoch
        The epoch keyauth serves: a new job is bound to it.
    cipher
        The keyless context of that epoch (and its profile).
    max_staleness
        The staleness policy's: how long update receipts are kept.
    store, journal, worker, traffic, clock
        Where the job goes, the thread that makes it durable, the thread that changes
        the model, the byte counters, seconds since the epoch.
    """

    def __init__(
        self,
        settings: ServerSettings,
        *,
        key_epoch: int,
        cipher: crypto.ServerCipher,
        max_staleness: int,
        store: Store,
        journal: Journal,
        worker: ApplyWorker,
        traffic: Traffic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._key_epoch = key_epoch
        self._cipher = cipher
        self._profile = cipher.profile
        self._max_staleness = max_staleness
        self._store = store
        self._journal = journal
        self._worker = worker
        self._traffic = traffic
        self._clock = clock
        self._job: OpenJob | None = None
        self._state: ModelState | None = None
        self._failure: ServerError | None = None
        self._checkpoint_version = 0

    def recover(self) -> None:
        """Load the stored job and rebuild its model (on the worker: it touches ciphertexts)."""
        recovered = recover(
            self._store, self._cipher, key_epoch=self._key_epoch, max_staleness=self._max_staleness
        )
        self._job = recovered.job
        if recovered.state is not None:
            self._state = recovered.state
            self._checkpoint_version = recovered.checkpoint_version
            self._journal.mark_durable(recovered.state.seq)

    # -- reading --------------------------------------------------------------------------

    @property
    def state(self) -> ModelState | None:
        """The live model; ``None`` until the initial model is stored."""
        return self._state

    @property
    def limits(self) -> crypto.EnvelopeLimits | None:
        """What an envelope of this job may hold; ``None`` until the layout is set."""
        return self._job.limits if self._job is not None else None

    @property
    def failure(self) -> ServerError | None:
        """Why the server no longer writes (an update failed half-way, or the journal)."""
        return self._failure if self._failure is not None else self._journal.failure

    def fail(self, error: ServerError) -> None:
        """Stop every write until restart: the model is no longer known to be right."""
        self._failure = error

    @property
    def checkpoint_version(self) -> int:
        """The version of the newest checkpoint, written or queued on the journal."""
        return self._checkpoint_version

    def checkpointed(self, version: int) -> None:
        """A checkpoint of ``version`` is queued on the journal (the publisher wrote it)."""
        self._checkpoint_version = version

    def job_state(self) -> JobState:
        state = self._state
        if state is None:
            return JobState.WAITING
        return JobState.DONE if state.seq >= self._settings.target_updates else JobState.TRAINING

    def view(self) -> JobView:
        state = self._state
        job = self._job
        return JobView(
            state=self.job_state(),
            version=state.version if state is not None else 0,
            target_updates=self._settings.target_updates,
            layout_fingerprint=job.layout.fingerprint.hex() if job else None,
            key_epoch=job.record.key_epoch if job else self._key_epoch,
            profile=self._profile.name,
        )

    def layout_json(self) -> bytes:
        if self._job is None:
            raise LayoutNotFoundError("no model layout has been set yet")
        return self._job.layout.to_json()

    def envelope_limit(self) -> int:
        """The largest model or update envelope this job's layout allows, in bytes."""
        if self._job is None:
            raise NoLayoutError("set the model layout first")
        return self._job.limits.max_total_bytes

    def snapshot(self) -> ModelSnapshot:
        """The published model; ``job_not_started`` before the initial model."""
        state = self._state
        if state is None:
            raise JobNotStartedError("the job has no initial model yet")
        return state.snapshot

    # -- guards ---------------------------------------------------------------------------

    def require_writable(self) -> None:
        failure = self.failure
        if failure is not None:
            raise StorageError(f"{failure.detail}; restart the server to recover from its log")

    def require_started(self) -> ModelState:
        self.require_writable()
        state = self._state
        if state is None:
            raise JobNotStartedError("the job has no initial model yet")
        return state

    def require_training(self, update_id: uuid.UUID | None = None) -> ModelState:
        """The model state while training; once done, only to answer a retried update."""
        state = self.require_started()
        retry = update_id is not None and state.receipt(update_id) is not None
        if self.job_state() is JobState.DONE and not retry:
            raise JobNotTrainingError(
                f"the job is done ({self._settings.target_updates} updates applied)"
            )
        return state

    def check_epoch(self, key_epoch: int) -> None:
        assert self._job is not None
        job_epoch = self._job.record.key_epoch
        if key_epoch != job_epoch:
            raise KeyEpochMismatchError(
                f"encrypted under key epoch {key_epoch}; this job uses epoch {job_epoch}",
                key_epoch=job_epoch,
            )

    # -- the layout -----------------------------------------------------------------------

    async def receive_layout(self, read_body: BodyReader) -> LayoutSet:
        """Read a layout body and set it; durable when this returns."""
        body = await read_body(self._settings.max_layout_bytes)
        created = await asyncio.wrap_future(self.set_layout(body))
        return LayoutSet(fingerprint=self.view().layout_fingerprint or "", created=created)

    def set_layout(self, body: bytes) -> Future[bool]:
        """Set the job's model layout; the future says whether it was new (else identical)."""
        self.require_writable()
        self._traffic.count_in(len(body))
        try:
            layout = crypto.ModelLayout.from_json(body)
        except crypto.LayoutError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        if layout.total_params > self._settings.max_params:
            raise LayoutInvalidError(
                f"layout of {layout.total_params} parameters exceeds FLSERVER_MAX_PARAMS "
                f"({self._settings.max_params})"
            )
        if layout.block_size != self._profile.block_size:
            raise LayoutInvalidError(
                f"layout block_size {layout.block_size} differs from the profile's "
                f"{self._profile.block_size} values per block"
            )
        return self._worker.submit(lambda: self._store_layout(layout))

    def _store_layout(self, layout: crypto.ModelLayout) -> bool:
        if self._job is not None:
            if self._job.layout.fingerprint == layout.fingerprint:
                return False
            raise LayoutConflictError(
                f"the job already has layout {self._job.layout.fingerprint.hex()[:16]}…"
            )
        record = JobRecord(
            job_id=uuid.uuid4().hex,
            key_epoch=self._key_epoch,
            profile=self._profile.name,
            layout_json=layout.to_json(),
            created_at=self._clock(),
        )
        self._journal.call(lambda: self._store.save_job(record)).result()
        self._job = open_job(record, self._profile)
        logger.info("job %s: layout %s set", record.job_id, layout.fingerprint.hex()[:16])
        return True

    # -- the initial model ----------------------------------------------------------------

    async def receive_initial_model(self, read_body: BodyReader) -> JobView:
        """Read an initial model envelope and start training from it; durable when this returns."""
        body = await read_body(self.envelope_limit())
        await asyncio.wrap_future(self.set_initial_model(body))
        return self.view()

    def set_initial_model(self, body: bytes) -> Future[None]:
        """Start training from a client-encrypted model envelope (version 0, every block)."""
        self.require_writable()
        self._traffic.count_in(len(body))
        job = self._job
        if job is None:
            raise NoLayoutError("set the model layout first")
        if self._state is not None:
            raise InitialModelExistsError("the job already has a model")
        try:
            model = crypto.model_from_bytes(body, job.limits)
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        self.check_epoch(model.key_epoch)
        if model.version != 0:
            raise IncompleteModelError(f"the initial model must be version 0, not {model.version}")
        if [b.index for b in model.blocks] != list(range(job.layout.n_blocks)):
            raise IncompleteModelError(
                f"the initial model must carry all {job.layout.n_blocks} blocks, in order"
            )
        return self._worker.submit(lambda: self._store_initial_model(model))

    def _store_initial_model(self, model: crypto.EncryptedModel) -> None:
        if self._state is not None:
            raise InitialModelExistsError("the job already has a model")
        assert self._job is not None
        record = self._job.record
        try:
            state = ModelState.initial(
                self._cipher, record, model, max_staleness=self._max_staleness
            )
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        checkpoint = state.checkpoint()
        self._journal.call(lambda: self._store.write_checkpoint(checkpoint)).result()
        self._state = state
        self._checkpoint_version = 0
        logger.info("job %s: initial model stored, training", record.job_id)
