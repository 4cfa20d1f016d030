"""The aggregation service, free of HTTP: wires the job, updates, clients, reports and status.

Threads: the caller's (the event loop) parses and admits; one apply worker
(``fl_server.worker``) runs every job change and every ciphertext operation in arrival
order; the journal thread (``fl_server.journal``) makes them durable; a small pool hashes
envelopes (``fl_server.updates``). Readers get the immutable ``ModelSnapshot`` the worker
publishes (``fl_server.publishing``) and never touch a ciphertext being changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future

import crypto
from fl_server.admission import RateLimiter, SlotTable, UpdateQueue, UpdateTicket
from fl_server.auth import ClientAuth
from fl_server.domain import BodyReader, JobView, LayoutSet, ModelDownload, StatusView, UpdateAck
from fl_server.downloads import ModelDownloads
from fl_server.job import JobLifecycle
from fl_server.journal import Journal
from fl_server.material import KeyauthMaterial
from fl_server.publishing import Publisher
from fl_server.reports import MetricsReports
from fl_server.settings import ServerSettings
from fl_server.snapshot import ModelSnapshot
from fl_server.status import StatusReader
from fl_server.store import FileStore, Store
from fl_server.traffic import Traffic
from fl_server.updates import UpdatePipeline
from fl_server.worker import ApplyWorker
from hefl_wire import AccessClaims

__all__ = ["KeyauthMaterial", "ServerService"]


class ServerService:
    """The aggregation server's operations, each handed to the part that owns it.

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
        cipher = crypto.ServerCipher(material.public_context, self.profile)
        self._auth = ClientAuth(material, clock=clock)
        self.policy = settings.staleness_policy()
        self._store = (
            store
            if store is not None
            else FileStore(settings.state_dir, max_metrics_reports=settings.max_metrics_reports)
        )
        self._slots = SlotTable(settings.max_training, settings.slot_ttl, clock=clock)
        self._queue = UpdateQueue(
            settings.max_queued_updates,
            RateLimiter(settings.client_updates_per_minute, settings.client_update_burst),
        )
        traffic = Traffic()
        self._journal = Journal(self._store)
        self._worker = ApplyWorker()
        self._lifecycle = JobLifecycle(
            settings,
            key_epoch=material.key_epoch,
            cipher=cipher,
            max_staleness=self.policy.max_staleness,
            store=self._store,
            journal=self._journal,
            worker=self._worker,
            traffic=traffic,
            clock=clock,
        )
        self._updates = UpdatePipeline(
            settings,
            self.policy,
            cipher,
            self._lifecycle,
            queue=self._queue,
            slots=self._slots,
            journal=self._journal,
            worker=self._worker,
            traffic=traffic,
            clock=clock,
        )
        self._reports = MetricsReports(
            self._lifecycle,
            self._store,
            self._journal,
            max_reports=settings.max_metrics_reports,
            max_body_bytes=settings.max_metrics_bytes,
            clock=clock,
        )
        self._downloads = ModelDownloads(self._lifecycle, traffic)
        self._status = StatusReader(
            settings,
            self.policy,
            lifecycle=self._lifecycle,
            updates=self._updates,
            queue=self._queue,
            slots=self._slots,
            auth=self._auth,
            reports=self._reports,
            traffic=traffic,
        )
        self._publisher = Publisher(
            settings, self._lifecycle, self._journal, self._store, interrupt=self._worker.has_work
        )
        self._worker.start(self._publisher.after_task)
        try:
            # Recovery touches ciphertexts, so it runs on the worker like every apply.
            self._worker.submit(self._recover).result()
        except BaseException:
            self._worker.close()
            self._journal.close()
            self._updates.close()
            self._store.close()
            raise

    def _recover(self) -> None:
        self._reports.load()
        self._lifecycle.recover()

    def close(self) -> None:
        """Finish queued updates, checkpoint if worthwhile, and release the state directory."""
        self._worker.submit(self._publisher.final_checkpoint)
        self._worker.close()
        self._journal.close()
        self._updates.close()
        self._store.close()

    # -- the job --------------------------------------------------------------------------

    def job(self) -> JobView:
        """The job's state, version and key epoch."""
        return self._lifecycle.view()

    def layout_json(self) -> bytes:
        """The job's model layout as set (``ModelLayout.to_json()``); ``no_layout`` before."""
        return self._lifecycle.layout_json()

    def envelope_limit(self) -> int:
        """The largest model or update envelope this job's layout allows, in bytes."""
        return self._lifecycle.envelope_limit()

    async def receive_layout(self, read_body: BodyReader) -> LayoutSet:
        """Read a layout body and set it (``set_layout``); durable when this returns."""
        return await self._lifecycle.receive_layout(read_body)

    def set_layout(self, body: bytes) -> Future[bool]:
        """Set the job's model layout; the future says whether it was new (else identical)."""
        return self._lifecycle.set_layout(body)

    async def receive_initial_model(self, read_body: BodyReader) -> JobView:
        """Read an initial model envelope and start training (``set_initial_model``)."""
        return await self._lifecycle.receive_initial_model(read_body)

    def set_initial_model(self, body: bytes) -> Future[None]:
        """Start training from a client-encrypted model envelope (version 0, every block)."""
        return self._lifecycle.set_initial_model(body)

    # -- the model ------------------------------------------------------------------------

    def snapshot(self) -> ModelSnapshot:
        """The published model; ``job_not_started`` before the initial model."""
        return self._lifecycle.snapshot()

    def download_model(self, since: int | None, if_none_match: str | None) -> ModelDownload:
        """The published model (or its blocks changed after ``since``); no body if held."""
        return self._downloads.download(since, if_none_match)

    # -- clients --------------------------------------------------------------------------

    def authenticate(self, token: str) -> AccessClaims:
        """The claims of a valid client token whose client is not revoked."""
        return self._auth.authenticate(token)

    def set_revoked(self, client_ids: Iterable[str]) -> None:
        """Replace the set of revoked client ids (from keyauth's revocation list)."""
        self._auth.set_revoked(client_ids)

    def acquire_slot(self, client: AccessClaims) -> float:
        """A training slot lease for ``client`` (renewed if held); its expiry."""
        self._lifecycle.require_training()
        return self._slots.acquire(client.client_id)

    def release_slot(self, client: AccessClaims) -> None:
        """Give ``client``'s training slot back, if it holds one."""
        self._slots.release(client.client_id)

    # -- updates --------------------------------------------------------------------------

    async def receive_update(self, client: AccessClaims, read_body: BodyReader) -> UpdateAck:
        """Admit, read and apply ``client``'s update; its answer once durable."""
        return await self._updates.receive(client, read_body)

    def admit_update(self, client: AccessClaims) -> UpdateTicket:
        """A queue place for ``client``'s update, taken before its body is read."""
        return self._updates.admit(client)

    def submit_update(self, ticket: UpdateTicket, body: bytes) -> Future[UpdateAck]:
        """Parse an admitted update and queue it; the future resolves once it is durable."""
        return self._updates.submit(ticket, body)

    # -- metrics reports ------------------------------------------------------------------

    async def receive_metrics(self, client: AccessClaims, read_body: BodyReader) -> int:
        """Read, check and keep ``client``'s evaluation report; its model version."""
        return await self._reports.receive(client, read_body)

    def record_metrics(
        self, client: AccessClaims, version: int, metrics: Mapping[str, float]
    ) -> Future[None]:
        """Keep a client's plaintext evaluation of model ``version``; durable when resolved."""
        return self._reports.record(client, version, metrics)

    # -- status ---------------------------------------------------------------------------

    def queued_updates(self) -> int:
        """Updates admitted and not yet answered."""
        return self._queue.queued()

    def slots_in_use(self) -> int:
        """Training slots leased now."""
        return self._slots.in_use()

    def status(self) -> StatusView:
        """Everything the status page and the Prometheus metrics show."""
        return self._status.read()
