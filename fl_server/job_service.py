"""One job's service, free of HTTP: wires its lifecycle, updates, clients, reports and status.

Threads, per job: the caller's (the event loop) parses and admits; one apply worker
(``fl_server.worker``) runs every change of the job and every ciphertext operation in
arrival order; the journal thread (``fl_server.journal``) makes them durable; a small
pool hashes envelopes (``fl_server.updates``). Readers get the immutable
``ModelSnapshot`` the worker publishes (``fl_server.publishing``) and never touch a
ciphertext being changed. One job's load, failure or recovery touches no other job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace

import crypto
import hefl_study
from fl_server.admission import RateLimiter, SlotTable, UpdateQueue
from fl_server.auth import Sightings
from fl_server.checks import parse_integrity_report
from fl_server.domain import (
    BodyReader,
    IntegrityState,
    JobView,
    LayoutSet,
    LeasedModel,
    ModelDownload,
    RepairView,
    StatusView,
    UpdateAck,
)
from fl_server.downloads import ModelDownloads
from fl_server.errors import RequestError, ServerError, StateError
from fl_server.integrity import JobIntegrity, parse_repair_request
from fl_server.job import JobLifecycle
from fl_server.jobspec import JobConfig
from fl_server.journal import Journal
from fl_server.material import EpochContext
from fl_server.published import PublishedWaiters
from fl_server.publishing import Publisher
from fl_server.reports import MetricsReports, parse_report, parse_report_header
from fl_server.rotation import JobRotation
from fl_server.rounds import RoundGate
from fl_server.settings import ServerSettings
from fl_server.shards import open_backend
from fl_server.snapshot import ModelSnapshot
from fl_server.status import StatusReader
from fl_server.stoprules import first_met
from fl_server.store import FileStore, JobRecord, Store
from fl_server.traffic import Traffic
from fl_server.updates import UpdatePipeline
from fl_server.worker import ApplyWorker
from hefl_wire import AccessClaims

__all__ = ["JobService"]


class JobService:
    """One job's operations, each handed to the part that owns it.

    Parameters
    ----------
    settings
        The process's limits, slot lease time, rate limits, queue size and checkpoints.
    record
        The job as created: its spec (whose ``[server]`` and ``[stop]`` configure it),
        key epoch and profile.
    context
        The keyless context of the job's key epoch.
    store
        The job's durable state (a ``FileStore`` on its directory).
    clock
        Seconds since the epoch; injectable for tests.

    Raises
    ------
    StateError
        The stored state is damaged, its spec no longer valid, or the context is not of
        the job's epoch and profile.
    crypto.CryptoError
        The context does not fit the profile or holds a secret key.
    """

    def __init__(
        self,
        settings: ServerSettings,
        record: JobRecord,
        context: EpochContext,
        *,
        store: Store,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            spec = hefl_study.spec_from_json(record.spec_json)
        except hefl_study.SpecError as exc:
            raise StateError(f"the stored spec is no longer valid: {exc}") from None
        if (context.key_epoch, context.profile) != (record.key_epoch, record.profile):
            raise StateError(
                f"the job uses key epoch {record.key_epoch} / {record.profile!r}, but the "
                f"context given is of epoch {context.key_epoch} / {context.profile!r}"
            )
        self.settings = settings
        self.record = record
        self.config = config = JobConfig.from_spec(spec)
        # Refuses a context with a secret key: the server must never be able to decrypt.
        cipher = crypto.ServerCipher(context.public_context, crypto.get_profile(record.profile))
        self._backend = open_backend(settings.shards, cipher, context.public_context)
        self._store = store
        self._sightings = Sightings(clock=clock)
        self._slots = SlotTable(config.max_training, settings.slot_ttl, clock=clock)
        self._rounds = (
            None
            if config.round_clients is None
            else RoundGate(
                config.round_clients,
                self._round_contributors,
                self._slots.holders,
                self._round_published,
                clock=clock,
            )
        )
        self._queue = UpdateQueue(
            settings.max_queued_updates,
            RateLimiter(settings.client_updates_per_minute, settings.client_update_burst),
        )
        traffic = Traffic()
        self._journal = Journal(store)
        self._worker = ApplyWorker()
        self._pending_tick: Future[None] | None = None
        self._lifecycle = JobLifecycle(
            settings,
            config,
            record,
            backend=self._backend,
            store=store,
            journal=self._journal,
            worker=self._worker,
            traffic=traffic,
            clock=clock,
        )
        self._integrity = JobIntegrity(
            settings,
            self._lifecycle,
            store=store,
            journal=self._journal,
            worker=self._worker,
            traffic=traffic,
            clock=clock,
        )
        self._lifecycle.integrity_view = self._integrity.view
        self._rotation = JobRotation(
            settings,
            self._lifecycle,
            store=store,
            journal=self._journal,
            worker=self._worker,
            healthy=lambda: self._integrity.view().state is IntegrityState.HEALTHY,
            after_swap=self._integrity.saw_metrics,  # the hospital checked it before
            clock=clock,
        )
        self._lifecycle.rotation_view = self._rotation.view
        self._updates = UpdatePipeline(
            config,
            self._lifecycle,
            queue=self._queue,
            slots=self._slots,
            journal=self._journal,
            worker=self._worker,
            traffic=traffic,
            clock=clock,
            after_apply=self._after_apply,
            check_client=self._integrity.require_not_quarantined,
            spool_dir=store.state_dir if isinstance(store, FileStore) else None,
        )
        self._reports = MetricsReports(
            self._lifecycle,
            store,
            self._journal,
            max_reports=settings.max_metrics_reports,
            clock=clock,
        )
        self._downloads = ModelDownloads(self._lifecycle, traffic)
        self._status = StatusReader(
            config,
            lifecycle=self._lifecycle,
            updates=self._updates,
            queue=self._queue,
            slots=self._slots,
            sightings=self._sightings,
            reports=self._reports,
            rounds=self._rounds,
            traffic=traffic,
            integrity=self._integrity,
        )
        self._publisher = Publisher(
            settings, self._lifecycle, self._journal, store, interrupt=self._worker.has_work
        )
        self._published = PublishedWaiters()
        self._worker.start(self._after_task)
        try:
            # Recovery touches ciphertexts, so it runs on the worker like every apply.
            self._worker.submit(self._recover).result()
        except BaseException:
            self._worker.close()
            self._journal.close()
            self._updates.close()
            self._backend.close()
            self._store.close()
            raise

    def _recover(self) -> None:
        self._reports.load()
        self._lifecycle.recover()
        # The search for a bad update follows from the durable reports: it goes on.
        self._integrity.load(int(r["version"]) for r in self._reports.reports())
        # A rule met just before a crash (a report, the wall time) is met again now.
        self._check_stop_rules()

    def close(self) -> None:
        """Finish queued updates, checkpoint if worthwhile, save the training time, and
        release the job's directory."""
        self._worker.submit(self._publisher.final_checkpoint)
        if self._lifecycle.failure is None:
            self._worker.submit(self._lifecycle.control.save)
        self._worker.close()
        self._journal.close()
        self._updates.close()
        self._backend.close()
        self._store.close()

    @property
    def name(self) -> str:
        return self.record.name

    # -- the job --------------------------------------------------------------------------

    def view(self) -> JobView:
        """The job: its state, stop reason, version, spec hash and key epoch."""
        return self._lifecycle.view()

    def spec_json(self) -> str:
        """The canonical JSON of the job's spec (its SHA-256 is ``record.spec_sha256``)."""
        return self.record.spec_json

    def layout_json(self, client: AccessClaims) -> bytes:
        """The job's model layout as set (``ModelLayout.to_json()``); ``no_layout`` before."""
        self._sightings.saw(client)
        return self._lifecycle.layout_json()

    def envelope_limit(self) -> int:
        """The largest model or update envelope this job's layout allows, in bytes."""
        return self._lifecycle.envelope_limit()

    async def receive_layout(self, client: AccessClaims, read_body: BodyReader) -> LayoutSet:
        """Read a layout body and set it; durable when this returns. ``created`` is false
        for the job's layout sent again."""
        self._sightings.saw(client)
        return await self._lifecycle.receive_layout(read_body)

    async def receive_initial_model(self, client: AccessClaims, read_body: BodyReader) -> JobView:
        """Read a client-encrypted initial model envelope (version 0, every block) and
        start training from it; durable when this returns."""
        self._sightings.saw(client)
        return await self._lifecycle.receive_initial_model(read_body)

    # -- the administrator ----------------------------------------------------------------

    async def pause(self) -> JobView:
        """Pause the job: slots and updates are refused with ``job_paused`` until resumed."""
        await asyncio.wrap_future(self._lifecycle.pause())
        return self.view()

    async def resume(self) -> JobView:
        """Resume a paused job; ``job_not_paused`` if it is not paused."""
        await asyncio.wrap_future(self._lifecycle.resume())
        return self.view()

    async def stop(self) -> JobView:
        """Stop the job for good (``stop_reason`` ``stopped``); a done job stays as it is."""
        await asyncio.wrap_future(self._lifecycle.stop())
        return self.view()

    def tick(self) -> Future[None]:
        """Check the wall-time rule and save the training time now and then (the server
        calls it every ``stop_check_interval``); the future resolves once done."""
        pending = self._pending_tick
        if pending is not None and not pending.done():
            return pending  # the worker is busy: one tick waiting is enough
        self._pending_tick = self._worker.submit(self._tick)
        return self._pending_tick

    def _tick(self) -> None:
        if self._lifecycle.failure is not None:
            return
        saved = self._lifecycle.control.tick()
        if saved is not None:
            # A small atomic write every few seconds: waiting keeps it ordered and simple.
            with contextlib.suppress(ServerError):
                saved.result()
        self._check_stop_rules()
        self._integrity.tick()
        if self._lifecycle.control.done:
            self._rotation.cancel("the job is done")
        self._rotation.tick()

    def _after_task(self, idle: bool) -> None:
        """On the worker, after each task: publish if due, and wake who waits for it."""
        try:
            self._publisher.after_task(idle)
        finally:
            state = self._lifecycle.state
            if state is not None:
                self._published.reached(state.snapshot.version)

    def _after_apply(self) -> None:
        """On the worker, after each applied update."""
        self._check_stop_rules()
        self._integrity.after_apply()

    def _check_stop_rules(self) -> None:
        """On the worker: the job is done at the first stop rule met."""
        if self._lifecycle.control.done or self._lifecycle.state is None:
            return
        reason = first_met(self._status.stop_rules())
        if reason is not None:
            self._lifecycle.finish(reason)

    # -- the model ------------------------------------------------------------------------

    def snapshot(self) -> ModelSnapshot:
        """The published model; ``job_not_started`` before the initial model."""
        return self._lifecycle.snapshot()

    def download_model(
        self,
        client: AccessClaims,
        since: int | None,
        if_none_match: str | None,
        *,
        version: int | None = None,
        update_id: uuid.UUID | None = None,
    ) -> ModelDownload:
        """The published model (or its blocks changed after ``since``); no body if held.

        With ``version`` (and ``update_id``): the integrity probe on offer, rebuilt; any
        other is refused with ``probe_not_offered``.
        """
        self._sightings.saw(client)
        if version is None and update_id is None:
            return self._downloads.download(since, if_none_match)
        if version is None or since is not None:
            raise RequestError("a probe is asked for with version= (and update=), without since=")
        self._lifecycle.require_started()
        return self._integrity.download(client, version, update_id)

    # -- clients --------------------------------------------------------------------------

    def acquire_slot(self, client: AccessClaims) -> float:
        """A training slot lease for ``client`` (renewed if held); its expiry."""
        self._sightings.saw(client)
        self._lifecycle.require_training()
        self._integrity.require_not_quarantined(client)
        self.admit_to_round(client)
        return self._slots.acquire(client.client_id)

    def lease_model(self, client: AccessClaims, since: int | None) -> LeasedModel:
        """``acquire_slot`` and ``download_model`` in one call (``POST …/leases``): a
        training lease for ``client`` (renewed if held), then the published model, or
        only its blocks changed after ``since`` (none when ``since`` is its version).

        Admission is ``acquire_slot``'s, whatever decides it; nothing is downloaded
        without a lease.
        """
        expires_at = self.acquire_slot(client)
        download = self._downloads.download(since, None)
        return LeasedModel(expires_at, self.view(), download)

    def admit_to_round(self, client: AccessClaims) -> None:
        """With the ``rounds`` policy, whether ``client`` may train now (``RoundGate``);
        every path that hands out work calls it. Nothing to check otherwise."""
        if self._rounds is not None:
            self._rounds.admit(client.client_id)

    def _round_contributors(self) -> tuple[int, tuple[str, ...]]:
        state = self._lifecycle.state
        return (0, ()) if state is None else state.round_contributors()

    def _round_published(self) -> bool:
        state = self._lifecycle.state
        return state is None or state.snapshot.version == state.version

    def release_slot(self, client: AccessClaims) -> None:
        """Give ``client``'s training slot back, if it holds one."""
        self._sightings.saw(client)
        self._slots.release(client.client_id)

    # -- updates --------------------------------------------------------------------------

    async def receive_update(
        self,
        client: AccessClaims,
        read_body: BodyReader,
        *,
        metrics: str | None = None,
        samples: str | None = None,
        lease_next: bool = False,
        since: int | None = None,
    ) -> UpdateAck:
        """Admit, read and apply ``client``'s update; its answer once durable.

        ``metrics`` is a report that comes with the update (``X-Hefl-Metrics``, the body of
        ``POST …/metrics``): checked before the update is read, kept once the update is
        acknowledged (applied, or a resend of an applied one), durable with the answer and
        kept once per update whatever the resends. ``samples``: the ``X-Hefl-Samples``
        header, the rows behind it (``parse_samples``).

        ``lease_next`` (``?lease=next``): the answer also carries the next round's lease
        and the model that holds this update, or only its blocks changed after ``since``
        (``next_lease``); the slot is then renewed by the update instead of given back.
        """
        self._sightings.saw(client)
        report = parse_report_header(metrics) if metrics is not None else None
        if report is not None:
            self._reports.check(report[0], report[1])
        # only where an update publishes a version of its own: FedBuff's buffer and the
        # rounds policy hold it back, and its client takes the next lease by POST …/leases
        keep_slot = lease_next and self.config.buffer_size == 1 and not self.config.rounds
        ack = await self._updates.receive(client, read_body, samples, keep_slot=keep_slot)
        leased = None
        try:
            if report is not None:
                version, values, privacy = report
                await self._keep_metrics(
                    client, version, values, privacy=privacy, update_id=str(ack.receipt.update_id)
                )
            if keep_slot:
                leased = await self.next_lease(client, ack.receipt.version, since)
        finally:
            if keep_slot and leased is None:  # no lease after all: the slot is given back
                self._slots.release(client.client_id)
        return replace(ack, leased=leased)

    async def next_lease(
        self, client: AccessClaims, version: int, since: int | None
    ) -> LeasedModel | None:
        """After an acknowledged update that kept ``client``'s slot: once the model of
        ``version`` (which holds the update) is published, ``lease_model``'s answer.

        ``None`` when that takes longer than ``update_lease_wait`` or the lease is refused
        (admission is ``acquire_slot``'s: the job done by this update, paused,
        quarantined, ``since`` ahead): the client is answered the plain 202 and asks
        ``POST …/leases`` itself.
        """
        try:
            await asyncio.wait_for(
                asyncio.wrap_future(self._published.wait_for(version)),
                self.settings.update_lease_wait,
            )
            return self.lease_model(client, since)
        except (TimeoutError, ServerError):
            return None

    # -- metrics reports ------------------------------------------------------------------

    async def receive_metrics(self, client: AccessClaims, read_body: BodyReader) -> int:
        """Read, check and keep ``client``'s evaluation report; its model version.

        Answered once the report is durable and the metric stop rule has seen it.
        """
        self._sightings.saw(client)
        version, metrics, privacy = parse_report(await read_body(self.settings.max_metrics_bytes))
        await self._keep_metrics(client, version, metrics, privacy=privacy)
        return version

    async def _keep_metrics(
        self,
        client: AccessClaims,
        version: int,
        metrics: dict[str, int | float],
        *,
        privacy: dict[str, float] | None = None,
        update_id: str | None = None,
    ) -> None:
        await asyncio.wrap_future(
            self._reports.record(client, version, metrics, privacy=privacy, update_id=update_id)
        )
        await asyncio.wrap_future(self._worker.submit(lambda: self._after_metrics(version)))

    def _after_metrics(self, version: int) -> None:
        self._check_stop_rules()
        # The client trained on ``version`` after checking it: it counts as checked good.
        self._integrity.saw_metrics(version)

    # -- integrity ------------------------------------------------------------------------

    async def receive_integrity(
        self, client: AccessClaims, read_body: BodyReader
    ) -> IntegrityState:
        """Read ``client``'s check of a model version and move the search; answered once
        the report is durable, with the job's integrity state after it."""
        self._sightings.saw(client)
        report = parse_integrity_report(await read_body(self.settings.max_metrics_bytes))
        limits = self._lifecycle.limits
        if limits is not None and any(b >= limits.n_blocks for b in report.blocks):
            raise RequestError(f"blocks are indices below {limits.n_blocks}")
        self._lifecycle.require_writable()
        return await asyncio.wrap_future(
            self._worker.submit(lambda: self._integrity.receive(client, report))
        )

    async def repair(self, read_body: BodyReader) -> RepairView:
        """The administrator removes updates by hand (``{"update_ids", "quarantine"}``)."""
        update_ids, quarantine = parse_repair_request(
            await read_body(self.settings.max_metrics_bytes)
        )
        self._lifecycle.require_writable()
        return await asyncio.wrap_future(
            self._worker.submit(lambda: self._integrity.repair(update_ids, quarantine=quarantine))
        )

    async def release(self, client_id: str) -> None:
        """The administrator releases a quarantined client; durable when this returns."""
        self._lifecycle.require_writable()
        await asyncio.wrap_future(self._worker.submit(lambda: self._integrity.release(client_id)))

    # -- key rotation ---------------------------------------------------------------------

    async def rotate(self, target: EpochContext, is_revoked: Callable[[str], bool]) -> JobView:
        """Move the job to key epoch ``target`` (docs/fl_server.md, "Key rotation"): the
        hospital seen most recently, not revoked (``is_revoked``) nor quarantined, is asked
        to re-encrypt the model; the others after it, one by one, if it does not."""

        def candidates() -> list[str]:
            seen = sorted(self._sightings.last_seen().items(), key=lambda kv: -kv[1][1])
            return [client_id for client_id, _ in seen if not is_revoked(client_id)]

        await asyncio.wrap_future(self._rotation.start(target, candidates))
        return self.view()

    async def receive_rotated_model(self, client: AccessClaims, read_body: BodyReader) -> JobView:
        """The model re-encrypted by the hospital asked; the job under its new key epoch
        once the swap is durable."""
        self._sightings.saw(client)
        body = await read_body(self._lifecycle.envelope_limit())
        await asyncio.wrap_future(self._rotation.receive(client, body))
        return self.view()

    # -- status ---------------------------------------------------------------------------

    def status(self) -> StatusView:
        """Everything the job's status page and its Prometheus series show."""
        status = self._status.read()
        return replace(status, rotations=self._rotation.status(status.updates_rejected))
