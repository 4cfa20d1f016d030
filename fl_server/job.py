"""A job's lifecycle: layout, initial model, the live model; waiting → training ⇄ paused → done."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future

import crypto
from fl_server.control import JobControl
from fl_server.domain import (
    BodyReader,
    IntegrityView,
    JobState,
    JobView,
    LayoutSet,
    RotationView,
    StopReason,
    body_chunks,
)
from fl_server.errors import (
    EnvelopeMalformedError,
    IncompleteModelError,
    InitialModelExistsError,
    InvalidInputError,
    JobNotPausedError,
    JobNotStartedError,
    JobNotTrainingError,
    JobPausedError,
    JobRotatingError,
    KeyEpochMismatchError,
    LayoutConflictError,
    LayoutInvalidError,
    LayoutNotFoundError,
    NoLayoutError,
    ServerError,
    StorageError,
)
from fl_server.hospital_privacy import update_noise
from fl_server.jobspec import JobConfig
from fl_server.journal import Journal
from fl_server.parsing import client_input
from fl_server.recovery import OpenLayout, open_layout, recover
from fl_server.settings import ServerSettings
from fl_server.shards import ShardBackend
from fl_server.snapshot import BlockWriter, ModelSnapshot, PublishedBlocks, ReceivedModel
from fl_server.state import ModelState
from fl_server.store import FileStore, JobRecord, Store
from fl_server.traffic import Traffic
from fl_server.worker import ApplyWorker

__all__ = ["JobLifecycle"]

logger = logging.getLogger("fl_server")


class JobLifecycle:
    """One job and its model: set up, recovered, paused, resumed, stopped, guarded, viewed.

    The layout, the model state and the control state are changed on the apply worker
    only; any thread may read them (each is one reference, swapped whole).

    Parameters
    ----------
    settings
        ``max_params`` and the layout body limit.
    config
        The job's settings from its spec (target updates, staleness bound).
    record
        The job as created: name, spec, key epoch, profile.
    backend
        Where the model's ciphertexts live (``fl_server.shards``), of the job's profile.
    store, journal, worker, traffic, clock
        Where the job's state goes, the thread that makes it durable, the thread that
        changes the model, the byte counters, seconds since the epoch.
    """

    def __init__(
        self,
        settings: ServerSettings,
        config: JobConfig,
        record: JobRecord,
        *,
        backend: ShardBackend,
        store: Store,
        journal: Journal,
        worker: ApplyWorker,
        traffic: Traffic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._config = config
        self.record = record
        self._backend = backend
        self._profile = backend.profile
        self._max_staleness = config.policy.max_staleness
        self._store = store
        # Where the published model's files go: the job's directory (a durable store's).
        self._directory = store.state_dir if isinstance(store, FileStore) else None
        self._journal = journal
        self._worker = worker
        self._traffic = traffic
        self._clock = clock
        self._layout: OpenLayout | None = None
        self._state: ModelState | None = None
        self._failure: ServerError | None = None
        self._checkpoint_version = 0
        # The job's integrity as ``Job`` shows it (``JobService`` hands its own in).
        self.integrity_view: Callable[[], IntegrityView] = IntegrityView
        # The key rotation under way, if any (``JobRotation`` hands its own in); while one
        # is, the model stays at its version and updates are refused (``job_rotating``).
        self.rotation_view: Callable[[], RotationView | None] = lambda: None
        self.rotating = False
        self.control = JobControl(
            store, journal, started=lambda: self._state is not None, clock=clock
        )

    def recover(self) -> None:
        """Load the stored job and rebuild its model (on the worker: it touches ciphertexts)."""
        recovered = recover(
            self._store,
            self._backend,
            self.record,
            max_staleness=self._max_staleness,
            repair_window=self._settings.repair_window,
            privacy=self._config.spec.privacy,
            directory=self._directory,
        )
        self._layout = recovered.layout
        state = recovered.state
        if state is not None:
            self._state = state
            self._checkpoint_version = recovered.checkpoint_version
            self._journal.mark_durable(state.seq)
        self.control.load()
        if state is not None and self.control.done and state.flush_buffer():
            state.publish()  # the buffer was flushed when the job was done: so again now

    # -- reading --------------------------------------------------------------------------

    @property
    def state(self) -> ModelState | None:
        """The live model; ``None`` until the initial model is stored."""
        return self._state

    @property
    def backend(self) -> ShardBackend:
        """Where the model's ciphertexts live."""
        return self._backend

    @property
    def limits(self) -> crypto.EnvelopeLimits | None:
        """What an envelope of this job may hold; ``None`` until the layout is set."""
        return self._layout.limits if self._layout is not None else None

    @property
    def failure(self) -> ServerError | None:
        """Why the job no longer writes (an update failed half-way, the journal, a shard)."""
        if self._failure is not None:
            return self._failure
        return self._journal.failure or self._backend.failure

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
        if self.control.done:
            return JobState.DONE
        if self.control.paused:
            return JobState.PAUSED
        return JobState.WAITING if self._state is None else JobState.TRAINING

    def view(self) -> JobView:
        state = self._state
        layout = self._layout
        record = self.record
        return JobView(
            name=record.name,
            description=self._config.spec.description,
            state=self.job_state(),
            stop_reason=self.control.stop_reason,
            version=state.version if state is not None else 0,
            updates_applied=state.seq if state is not None else 0,
            target_updates=self._config.target_updates,
            spec_sha256=record.spec_sha256,
            key_epoch=record.key_epoch,
            profile=record.profile,
            layout_fingerprint=layout.layout.fingerprint.hex() if layout else None,
            created_at=record.created_at,
            training_seconds=self.control.training_seconds(),
            key_id=record.key_id,
            integrity=self.integrity_view(),
            rotation=self.rotation_view(),
        )

    def layout_json(self) -> bytes:
        if self._layout is None:
            raise LayoutNotFoundError("no model layout has been set yet")
        return self._layout.layout.to_json()

    def envelope_limit(self) -> int:
        """The largest model or update envelope this job's layout allows, in bytes."""
        if self._layout is None:
            raise NoLayoutError("set the model layout first")
        return self._layout.limits.max_total_bytes

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

    def require_not_done(self) -> None:
        if self.control.done:
            reason = self.control.stop_reason
            raise JobNotTrainingError(f"the job is done ({reason.value if reason else 'done'})")

    def require_training(self, update_id: uuid.UUID | None = None) -> ModelState:
        """The model state while training; paused or done, only to answer a retried update.

        Raises
        ------
        JobPausedError
            The job is paused: the update is not applied, the client sends it again later.
        JobNotTrainingError
            The job is done.
        JobNotStartedError
            The job has no initial model yet.
        """
        self.require_writable()
        state = self._state
        if state is not None and update_id is not None and state.receipt(update_id) is not None:
            return state
        self.require_not_done()
        if self.control.paused:
            raise JobPausedError(
                "the job is paused: keep the update and send it again once the job resumes"
            )
        if self.rotating:
            raise JobRotatingError(
                "the job is moving to a new key epoch: an update under the old one can never "
                "be applied; once the job shows its new key_epoch, fetch that epoch's secret "
                "context from keyauth, pull the model and train again"
            )
        return self.require_started()

    def check_epoch(self, key_epoch: int) -> None:
        job_epoch = self.record.key_epoch
        if key_epoch != job_epoch:
            if any(r.from_epoch == key_epoch for r in self.record.rotations):
                logger.info(
                    "job %s: an update under key epoch %d, from before a key rotation, is "
                    "refused: its hospital trains it again under epoch %d",
                    self.record.name,
                    key_epoch,
                    job_epoch,
                )
            raise KeyEpochMismatchError(
                f"encrypted under key epoch {key_epoch}; this job uses epoch {job_epoch}: "
                f"fetch the secret context of key epoch {job_epoch} from keyauth, pull the "
                "model and train again",
                key_epoch=job_epoch,
            )

    def swap(self, record: JobRecord, state: ModelState) -> None:
        """On the worker, once durable: the job and its model under a new key epoch."""
        self.record = record
        self._state = state
        self._checkpoint_version = state.version
        self.rotating = False

    # -- the administrator ----------------------------------------------------------------

    def pause(self) -> Future[None]:
        """Pause training (a paused job stays paused); durable when the future resolves."""
        self.require_writable()
        return self._worker.submit(self._pause)

    def _pause(self) -> None:
        self.require_not_done()
        if not self.control.paused:
            self.control.pause().result()
            logger.info("job %s: paused", self.record.name)

    def resume(self) -> Future[None]:
        """Resume a paused job; durable when the future resolves."""
        self.require_writable()
        return self._worker.submit(self._resume)

    def _resume(self) -> None:
        if not self.control.paused or self.control.done:
            raise JobNotPausedError(f"the job is {self.job_state().value}, not paused")
        self.control.resume().result()
        logger.info("job %s: resumed", self.record.name)

    def stop(self) -> Future[None]:
        """Stop the job for good (a done job stays as it is); durable when it resolves."""
        self.require_writable()
        return self._worker.submit(self._stop)

    def _stop(self) -> None:
        written = self.finish(StopReason.STOPPED)
        if written is not None:
            written.result()

    def finish(self, reason: StopReason) -> Future[None] | None:
        """On the worker: the job is done for ``reason``, its partly filled buffer added.

        A job already done keeps its first reason (``None``: nothing to write).
        """
        if self.control.done:
            return None
        written = self.control.finish(reason)
        state = self._state
        if state is not None and state.flush_buffer():
            # Every acknowledged update ends up in the model, even one short of a buffer.
            logger.info("job %s: its buffer added at version %d", self.record.name, state.version)
        logger.info("job %s: done (%s)", self.record.name, reason.value)
        return written

    # -- the layout -----------------------------------------------------------------------

    async def receive_layout(self, read_body: BodyReader) -> LayoutSet:
        """Read a layout body and set it; durable when this returns."""
        body = await read_body(self._settings.max_layout_bytes)
        created = await asyncio.wrap_future(self.set_layout(body))
        assert self._layout is not None
        return LayoutSet(fingerprint=self._layout.layout.fingerprint.hex(), created=created)

    def set_layout(self, body: bytes) -> Future[bool]:
        """Set the job's model layout; the future says whether it was new (else identical)."""
        self.require_writable()
        self._traffic.count_in(len(body))
        with client_input("the layout", LayoutInvalidError):
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
        if self._layout is not None:
            if self._layout.layout.fingerprint == layout.fingerprint:
                return False
            raise LayoutConflictError(
                f"the job already has layout {self._layout.layout.fingerprint.hex()[:16]}…"
            )
        self.require_not_done()
        layout_json = layout.to_json()
        self._journal.call(lambda: self._store.save_layout(layout_json)).result()
        self._layout = open_layout(layout_json, self._profile)
        logger.info("job %s: layout %s set", self.record.name, layout.fingerprint.hex()[:16])
        return True

    # -- the initial model ----------------------------------------------------------------

    async def receive_initial_model(self, read_body: BodyReader) -> JobView:
        """Read an initial model envelope and start training from it; durable when this returns.

        The body is parsed as it arrives, its blocks written to a file in the job's
        directory (the published model's first): the server never holds it.
        """
        self._require_no_model()
        model = await self.read_model(read_body, "the initial model")
        await asyncio.wrap_future(self.set_initial_model(model))
        return self.view()

    def _require_no_model(self) -> None:
        self.require_writable()
        if self._layout is None:
            raise NoLayoutError("set the model layout first")
        if self._state is not None:
            raise InitialModelExistsError("the job already has a model")
        self.require_not_done()

    def set_initial_model(self, model: crypto.EncryptedModel | ReceivedModel) -> Future[None]:
        """Start training from a client-encrypted model (version 0, every block)."""
        self._require_no_model()
        self.check_epoch(model.key_epoch)
        if model.version != 0:
            raise IncompleteModelError(f"the initial model must be version 0, not {model.version}")
        return self._worker.submit(lambda: self._store_initial_model(model))

    async def read_model(self, read_body: BodyReader, what: str) -> ReceivedModel:
        """A model envelope of this job's layout, every block in order, parsed block by
        block as it arrives and written to a file; ciphertexts not loaded."""
        layout = self._layout
        if layout is None:
            raise NoLayoutError("set the model layout first")
        parser = crypto.EnvelopeParser("model", layout.limits)
        writer = BlockWriter(PublishedBlocks(()), self._directory)
        indices: list[int] = []
        try:
            with client_input("the model envelope", EnvelopeMalformedError):
                try:
                    async for chunk in body_chunks(read_body, self.envelope_limit()):
                        for block in parser.feed(chunk):
                            writer.write(block.index, block.data)
                            indices.append(block.index)
                    head = parser.close()
                except crypto.CryptoError as exc:
                    raise InvalidInputError.from_crypto(exc) from exc
        finally:
            self._traffic.count_in(parser.size)
        self._every_index(indices, what)
        return ReceivedModel(head.fingerprint, head.version, head.key_epoch, writer.publish())

    def whole_model(self, body: bytes, what: str) -> crypto.EncryptedModel:
        """A client's model envelope of this job's layout, every block in order (an
        initial model, or one re-encrypted for a key rotation); ciphertexts not loaded."""
        layout = self._layout
        if layout is None:
            raise NoLayoutError("set the model layout first")
        with client_input("the model envelope", EnvelopeMalformedError):
            try:
                model = crypto.model_from_bytes(body, layout.limits)
            except crypto.CryptoError as exc:
                raise InvalidInputError.from_crypto(exc) from exc
        return self._every_block(model, what)

    def _every_block(self, model: crypto.EncryptedModel, what: str) -> crypto.EncryptedModel:
        self._every_index([b.index for b in model.blocks], what)
        return model

    def _every_index(self, indices: list[int], what: str) -> None:
        assert self._layout is not None
        n_blocks = self._layout.layout.n_blocks
        if indices != list(range(n_blocks)):
            raise IncompleteModelError(f"{what} must carry all {n_blocks} blocks, in order")

    def _store_initial_model(self, model: crypto.EncryptedModel | ReceivedModel) -> None:
        if self._state is not None:
            raise InitialModelExistsError("the job already has a model")
        self.require_not_done()
        layout = self._layout
        assert layout is not None  # the envelope was read against it
        try:
            state = ModelState.initial(
                self._backend,
                self.record,
                model,
                max_staleness=self._max_staleness,
                repair_window=self._settings.repair_window,
                noise=update_noise(self._config.spec.privacy, layout.layout),
                directory=self._directory,
            )
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        checkpoint = state.checkpoint()
        self._journal.call(lambda: self._store.write_checkpoint(checkpoint)).result()
        self._state = state
        self._checkpoint_version = 0
        self.control.update_clock()
        logger.info("job %s: initial model stored, %s", self.record.name, self.job_state().value)
