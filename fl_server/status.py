"""A job's status view: one plain ``StatusView`` assembled from every part of the job."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fl_server.admission import SlotTable, UpdateQueue
from fl_server.auth import Sightings
from fl_server.domain import ClientPrivacy, ClientView, StatusView, StopRuleView
from fl_server.hospital_privacy import hospital_privacy
from fl_server.integrity import JobIntegrity
from fl_server.job import JobLifecycle
from fl_server.jobspec import JobConfig
from fl_server.reports import MetricsReports, client_metrics, client_privacy, metrics_by_version
from fl_server.rounds import RoundGate
from fl_server.state import ModelState
from fl_server.stoprules import evaluate_stop_rules
from fl_server.tally import ClientTally
from fl_server.traffic import Traffic
from fl_server.updates import UpdatePipeline

__all__ = ["StatusReader"]


class StatusReader:
    """Reads the job, its counters, its clients and its stop rules into a ``StatusView``."""

    def __init__(
        self,
        config: JobConfig,
        *,
        lifecycle: JobLifecycle,
        updates: UpdatePipeline,
        queue: UpdateQueue,
        slots: SlotTable,
        sightings: Sightings,
        reports: MetricsReports,
        traffic: Traffic,
        integrity: JobIntegrity,
        rounds: RoundGate | None = None,
    ) -> None:
        self._config = config
        self._rounds = rounds
        self._lifecycle = lifecycle
        self._updates = updates
        self._queue = queue
        self._slots = slots
        self._sightings = sightings
        self._reports = reports
        self._traffic = traffic
        self._integrity = integrity

    def stop_rules(self) -> tuple[StopRuleView, ...]:
        """Each of the job's stop rules and how far it is."""
        state = self._lifecycle.state
        return evaluate_stop_rules(
            self._config.stop,
            updates_applied=state.seq if state is not None else 0,
            training_seconds=self._lifecycle.control.training_seconds(),
            pooled=self._reports.pooled(),
        )

    def read(self) -> StatusView:
        state = self._lifecycle.state
        tally = state.tally() if state is not None else None
        rejected, rejected_by_client, duplicates = self._updates.counts()
        seen = self._sightings.last_seen()
        reports = self._reports.reports()
        latest = self._reports.latest()
        spent = self._reports.privacy()
        bytes_in, bytes_out = self._traffic.totals()
        report_counts = Counter(str(r["client_id"]) for r in reports)
        client_ids = set(seen) | set(rejected_by_client) | set(report_counts) | set(latest)
        if tally is not None:
            client_ids |= set(tally.clients)
        clients = {}
        for cid in sorted(client_ids):
            applied = tally.clients.get(cid) if tally is not None else None
            name, last_seen = seen.get(cid, (None, None))
            report = latest.get(cid)
            # Names the server saw before a restart come from the log and the reports.
            name = name or (applied.client_name if applied else None)
            name = name or (str(report["client_name"]) if report else None)
            clients[cid] = ClientView(
                client_name=name,
                updates_applied=applied.updates_applied if applied else 0,
                updates_rejected=rejected_by_client.get(cid, 0),
                metrics_reports=report_counts.get(cid, 0),
                last_seen=last_seen,
                last_update_at=(applied.last_update_at or None) if applied else None,
                latest_metrics=client_metrics(report) if report is not None else None,
                mean_staleness=applied.mean_staleness() if applied else None,
                mean_weight=applied.mean_weight() if applied else None,
                privacy=self._privacy(cid, spent, applied, state),
            )
        job = self._lifecycle.view()
        seq = state.seq if state is not None else 0
        return StatusView(
            job=job,
            published_version=state.snapshot.version if state is not None else 0,
            staleness_policy=self._config.policy.describe(),
            buffer_size=self._config.buffer_size,
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
            max_training=self._config.max_training,
            queued_updates=self._queue.queued(),
            metrics=metrics_by_version(reports),
            pooled_metrics=self._reports.pooled(),
            stop_rules=self.stop_rules(),
            integrity=self._integrity.status(),
            server_policy=self.server_policy(),
        )

    def _privacy(
        self,
        client_id: str,
        spent: dict[str, dict[str, Any]],
        applied: ClientTally | None,
        state: ModelState | None,
    ) -> ClientPrivacy | None:
        """Sample level: what the client reported; hospital level: what the server
        computes from its applied (noised) updates."""
        privacy = self._config.spec.privacy
        if privacy is not None and privacy.level == "hospital":
            updates = applied.updates_applied if applied else 0
            return hospital_privacy(privacy, updates, state.version if state else 0)
        return client_privacy(spent[client_id]) if client_id in spent else None

    def server_policy(self) -> dict[str, Any]:
        """How updates are taken and weighed and, with rounds, the open round."""
        weigher = self._config.weigher
        policy: dict[str, Any] = {
            "policy": "rounds" if self._rounds is not None else "async",
            "weighting": weigher.data.describe(),
            "schedule": weigher.schedule.describe(),
        }
        if self._rounds is not None:
            view = self._rounds.view()
            policy["round"] = {
                "round": view.round,
                "clients": view.clients,
                "contributors": list(view.contributors),
                "training": list(view.training),
                "opened_at": view.opened_at,
            }
        return policy
