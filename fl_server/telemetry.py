"""Prometheus metrics read from the jobs' status at scrape time (one source of truth)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from fl_server.domain import IntegrityState, JobState, ServerStatusView, StatusView

__all__ = ["STALENESS_BUCKETS", "ServiceCollector", "make_registry"]

STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128)

# name, kind, help, what it reads from a job's status
_Family = type[GaugeMetricFamily] | type[CounterMetricFamily]
_SERIES: tuple[tuple[str, _Family, str, Callable[[StatusView], float]], ...] = (
    ("hefl_server_model_version", GaugeMetricFamily, "version of the applied model",
     lambda s: s.job.version),
    ("hefl_server_published_version", GaugeMetricFamily, "version of the model downloads get",
     lambda s: s.published_version),
    ("hefl_server_updates_applied", CounterMetricFamily, "updates accepted and durable",
     lambda s: s.job.updates_applied),
    ("hefl_server_updates_buffered", GaugeMetricFamily, "updates waiting in the FedBuff buffer",
     lambda s: s.updates_buffered),
    ("hefl_server_update_duplicates", CounterMetricFamily,
     "retried updates answered without applying them again", lambda s: s.duplicates),
    ("hefl_server_receipts_kept", GaugeMetricFamily,
     "answers to applied updates kept for retries", lambda s: s.receipts_kept),
    ("hefl_server_received_bytes", CounterMetricFamily, "request body bytes received",
     lambda s: s.bytes_in),
    ("hefl_server_sent_bytes", CounterMetricFamily, "model bytes sent", lambda s: s.bytes_out),
    ("hefl_server_training_slots_in_use", GaugeMetricFamily, "leased slots",
     lambda s: s.slots_in_use),
    ("hefl_server_training_slots", GaugeMetricFamily, "slots in all", lambda s: s.max_training),
    ("hefl_server_queued_updates", GaugeMetricFamily, "updates admitted and not yet answered",
     lambda s: s.queued_updates),
    ("hefl_server_clients", GaugeMetricFamily, "clients seen since start",
     lambda s: len(s.clients)),
    ("hefl_server_training_seconds", CounterMetricFamily, "time spent in state training",
     lambda s: s.job.training_seconds),
    ("hefl_server_integrity_reports", CounterMetricFamily,
     "clients' integrity reports kept (checks of the models they decrypt)",
     lambda s: s.integrity.reports_total),
    ("hefl_server_repairs", CounterMetricFamily, "repairs: updates removed from the model",
     lambda s: len(s.integrity.repairs)),
    ("hefl_server_updates_removed", CounterMetricFamily, "updates removed by repairs",
     lambda s: s.integrity.updates_removed),
    ("hefl_server_privacy_epsilon_max", GaugeMetricFamily,
     "the largest epsilon a client has spent (DP-SGD as reported, or hospital-level DP as "
     "the server counts it; 0 without [privacy])",
     lambda s: max((c.privacy.epsilon for c in s.clients.values() if c.privacy), default=0.0)),
    ("hefl_server_privacy_clients", GaugeMetricFamily,
     "clients with an epsilon spent (reported, or counted by the server)", lambda s: sum(
         1 for c in s.clients.values() if c.privacy is not None)),
    ("hefl_server_clients_quarantined", GaugeMetricFamily,
     "clients whose updates are refused until an administrator releases them",
     lambda s: len(s.integrity.quarantined)),
)  # fmt: skip


class ServiceCollector(Collector):
    """Turns every job's status into metric families labelled ``job``; nothing to keep in sync.

    Parameters
    ----------
    server
        The server's status (its jobs and failed jobs); ``None`` while it is not started.
    jobs
        Every job's status.
    """

    def __init__(
        self,
        server: Callable[[], ServerStatusView | None],
        jobs: Callable[[], Sequence[StatusView]],
    ) -> None:
        self._server = server
        self._jobs = jobs

    def collect(self) -> Iterable[Metric]:
        server = self._server()
        if server is None:
            return
        yield GaugeMetricFamily(
            "hefl_server_jobs_failed",
            "job directories left out at startup (see GET /v1/status)",
            value=len(server.failed_jobs),
        )
        statuses = self._jobs()
        state = GaugeMetricFamily(
            "hefl_server_job_state", "1 for the job's current state", labels=["job", "state"]
        )
        for status in statuses:
            for job_state in JobState:
                held = 1.0 if status.job.state is job_state else 0.0
                state.add_metric([status.job.name, job_state.value], held)
        yield state
        integrity = GaugeMetricFamily(
            "hefl_server_integrity_state",
            "1 for the job's integrity state (healthy, locating, repairing)",
            labels=["job", "state"],
        )
        for status in statuses:
            for integrity_state in IntegrityState:
                held = 1.0 if status.integrity.state is integrity_state else 0.0
                integrity.add_metric([status.job.name, integrity_state.value], held)
        yield integrity
        for name, kind, doc, read in _SERIES:
            family = kind(name, doc, labels=["job"])
            for status in statuses:
                family.add_metric([status.job.name], float(read(status)))
            yield family
        rejected = CounterMetricFamily(
            "hefl_server_updates_rejected",
            "updates refused, by problem code",
            labels=["job", "code"],
        )
        for status in statuses:
            for code, count in sorted(status.updates_rejected.items()):
                rejected.add_metric([status.job.name, code], count)
        yield rejected
        staleness = HistogramMetricFamily(
            "hefl_server_update_staleness",
            "staleness (versions) of applied updates",
            labels=["job"],
        )
        for status in statuses:
            buckets, total = _staleness_buckets(status.staleness_histogram)
            staleness.add_metric([status.job.name], buckets, total)
        yield staleness


def _staleness_buckets(counts: dict[int, int]) -> tuple[list[tuple[str, float]], float]:
    buckets: list[tuple[str, float]] = []
    for bound in STALENESS_BUCKETS:
        buckets.append((str(bound), float(sum(n for tau, n in counts.items() if tau <= bound))))
    buckets.append(("+Inf", float(sum(counts.values()))))
    return buckets, float(sum(tau * n for tau, n in counts.items()))


def make_registry(
    server: Callable[[], ServerStatusView | None], jobs: Callable[[], Sequence[StatusView]]
) -> CollectorRegistry:
    """A registry of this app's own (never the process-global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(server, jobs))
    return registry
