"""Prometheus metrics read from the service's status at scrape time (one source of truth)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from fl_server.domain import JobState, StatusView

__all__ = ["STALENESS_BUCKETS", "ServiceCollector", "make_registry"]

STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128)


class ServiceCollector(Collector):
    """Turns ``ServerService.status()`` into metric families; nothing to keep in sync."""

    def __init__(self, status: Callable[[], StatusView | None]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        status = self._status()
        if status is None:
            return
        state = GaugeMetricFamily(
            "hefl_server_job_state", "1 for the job's current state", labels=["state"]
        )
        for name in JobState:
            state.add_metric([name.value], 1.0 if status.state is name else 0.0)
        yield state
        yield GaugeMetricFamily(
            "hefl_server_model_version", "version of the applied model", value=status.version
        )
        yield GaugeMetricFamily(
            "hefl_server_published_version",
            "version of the model downloads get",
            value=status.published_version,
        )
        yield CounterMetricFamily(
            "hefl_server_updates_applied",
            "updates accepted and durable",
            value=status.updates_applied,
        )
        yield GaugeMetricFamily(
            "hefl_server_updates_buffered",
            "updates waiting in the FedBuff buffer",
            value=status.updates_buffered,
        )
        rejected = CounterMetricFamily(
            "hefl_server_updates_rejected", "updates refused, by problem code", labels=["code"]
        )
        for code, count in sorted(status.updates_rejected.items()):
            rejected.add_metric([code], count)
        yield rejected
        yield CounterMetricFamily(
            "hefl_server_update_duplicates",
            "retried updates answered without applying them again",
            value=status.duplicates,
        )
        yield GaugeMetricFamily(
            "hefl_server_receipts_kept",
            "answers to applied updates kept for retries",
            value=status.receipts_kept,
        )
        yield _staleness_histogram(status.staleness_histogram)
        yield CounterMetricFamily(
            "hefl_server_received_bytes", "request body bytes received", value=status.bytes_in
        )
        yield CounterMetricFamily(
            "hefl_server_sent_bytes", "model bytes sent", value=status.bytes_out
        )
        yield GaugeMetricFamily(
            "hefl_server_training_slots_in_use", "leased slots", value=status.slots_in_use
        )
        yield GaugeMetricFamily(
            "hefl_server_training_slots", "slots in all", value=status.max_training
        )
        yield GaugeMetricFamily(
            "hefl_server_queued_updates",
            "updates admitted and not yet answered",
            value=status.queued_updates,
        )
        yield GaugeMetricFamily(
            "hefl_server_clients", "clients seen since start", value=len(status.clients)
        )


def _staleness_histogram(counts: dict[int, int]) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    for bound in STALENESS_BUCKETS:
        buckets.append((str(bound), float(sum(n for tau, n in counts.items() if tau <= bound))))
    buckets.append(("+Inf", float(sum(counts.values()))))
    return HistogramMetricFamily(
        "hefl_server_update_staleness",
        "staleness (versions) of applied updates",
        buckets=buckets,
        sum_value=float(sum(tau * n for tau, n in counts.items())),
    )


def make_registry(status: Callable[[], StatusView | None]) -> CollectorRegistry:
    """A registry of this app's own (never the process-global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(status))
    return registry
