"""The status view: one plain ``StatusView`` assembled from every part of the service."""

from __future__ import annotations

from collections import Counter

from fl_server.admission import SlotTable, UpdateQueue
from fl_server.auth import ClientAuth
from fl_server.domain import ClientView, StatusView
from fl_server.job import JobLifecycle
from fl_server.reports import MetricsReports, metrics_by_version
from fl_server.settings import ServerSettings
from fl_server.staleness import StalenessPolicy
from fl_server.traffic import Traffic
from fl_server.updates import UpdatePipeline

__all__ = ["StatusReader"]


class StatusReader:
    """Reads the job, the counters and the clients into a ``StatusView``; changes nothing."""

    def __init__(
        self,
        settings: ServerSettings,
        policy: StalenessPolicy,
        *,
        lifecycle: JobLifecycle,
        updates: UpdatePipeline,
        queue: UpdateQueue,
        slots: SlotTable,
        auth: ClientAuth,
        reports: MetricsReports,
        traffic: Traffic,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self._lifecycle = lifecycle
        self._updates = updates
        self._queue = queue
        self._slots = slots
        self._auth = auth
        self._reports = reports
        self._traffic = traffic

    def read(self) -> StatusView:
        state = self._lifecycle.state
        tally = state.tally() if state is not None else None
        rejected, rejected_by_client, duplicates = self._updates.counts()
        seen = self._auth.last_seen()
        reports = self._reports.reports()
        bytes_in, bytes_out = self._traffic.totals()
        queued = self._queue.queued()
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
            clients[cid] = ClientView(
                client_name=name,
                updates_applied=applied.updates_applied if applied else 0,
                updates_rejected=rejected_by_client.get(cid, 0),
                metrics_reports=report_counts.get(cid, 0),
                last_seen=last_seen,
                last_update_at=(applied.last_update_at or None) if applied else None,
            )
        job = self._lifecycle.view()
        seq = state.seq if state is not None else 0
        return StatusView(
            state=job.state,
            version=state.version if state is not None else 0,
            published_version=state.snapshot.version if state is not None else 0,
            target_updates=self._settings.target_updates,
            key_epoch=job.key_epoch,
            profile=job.profile,
            layout_fingerprint=job.layout_fingerprint,
            staleness_policy=self._policy.describe(),
            buffer_size=self._settings.buffer_size,
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
            max_training=self._settings.max_training,
            queued_updates=queued,
            metrics=metrics_by_version(reports),
        )
