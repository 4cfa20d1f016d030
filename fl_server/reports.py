"""Clients' evaluation reports: validated, stored durably, summarized per version and pooled."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from pydantic import ValidationError

from fl_server.domain import ClientMetrics, ClientPrivacy, PooledMetric, VersionSummary
from fl_server.errors import JobNotStartedError, MetricsInvalidError, VersionAheadError
from fl_server.job import JobLifecycle
from fl_server.journal import Journal
from fl_server.parsing import client_input, validation_detail
from fl_server.schemas import MetricsReportCreate
from fl_server.store import Store
from hefl_wire import AccessClaims

__all__ = [
    "MAX_REPORT_HEADER_BYTES",
    "MetricsReports",
    "check_metrics",
    "client_metrics",
    "client_privacy",
    "metrics_by_version",
    "parse_report",
    "parse_report_header",
    "pooled_metrics",
]

MAX_REPORT_HEADER_BYTES = 4096
"""The longest ``X-Hefl-Metrics`` header: 32 metrics of 64-character names fit."""
_METRIC_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_METRICS_PER_REPORT = 32
# Metrics are losses, accuracies and sample counts; a bound keeps every average finite.
_MAX_METRIC_MAGNITUDE = 1e12


class MetricsReports:
    """The plaintext evaluation reports clients send on the models they pull.

    Keeps the newest ``max_reports`` in memory, and each client's latest report (on the
    newest model version it reported, the last received of those); every kept report is
    also in the store. Of the reports that carry the ε a client spent (``privacy``), the
    largest per client is kept too: spent privacy only grows.

    Parameters
    ----------
    lifecycle
        The job: a report is on a model version that exists.
    store, journal
        Where reports are kept, written after every log record before them.
    max_reports
        How many reports are kept.
    clock
        Seconds since the epoch.
    """

    def __init__(
        self,
        lifecycle: JobLifecycle,
        store: Store,
        journal: Journal,
        *,
        max_reports: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifecycle = lifecycle
        self._store = store
        self._journal = journal
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: deque[dict[str, Any]] = deque(maxlen=max_reports)
        self._latest: dict[str, dict[str, Any]] = {}
        self._privacy: dict[str, dict[str, Any]] = {}
        self._max_reports = max_reports
        self._update_ids: OrderedDict[str, None] = OrderedDict()  # reports that came with one

    def load(self) -> None:
        """Read the stored reports (at startup, before any is recorded)."""
        for report in self._store.load_metrics():
            self._keep(report)

    def _keep(self, report: dict[str, Any]) -> None:
        with self._lock:
            self._reports.append(report)
            update_id = report.get("update_id")
            if isinstance(update_id, str):
                self._note_update(update_id)
            client_id = str(report["client_id"])
            latest = self._latest.get(client_id)
            if latest is None or int(report["version"]) >= int(latest["version"]):
                self._latest[client_id] = report
            spent = report.get("privacy")
            kept = self._privacy.get(client_id)
            if spent is not None and (
                kept is None or float(spent["epsilon"]) >= float(kept["privacy"]["epsilon"])
            ):
                self._privacy[client_id] = report

    def check(self, version: int, metrics: Mapping[str, float]) -> None:
        """Refuse what ``record`` would refuse: a version the model has not reached, or
        metrics that break the schema (``check_metrics``)."""
        self._lifecycle.require_writable()
        state = self._lifecycle.state
        if state is None:
            raise JobNotStartedError("the job has no model yet")
        if version > state.version:
            raise VersionAheadError(
                f"metrics for version {version}, but the model is at version {state.version}",
                current_version=state.version,
            )
        check_metrics(metrics)

    def record(
        self,
        client: AccessClaims,
        version: int,
        metrics: Mapping[str, float],
        *,
        privacy: Mapping[str, float] | None = None,
        update_id: str | None = None,
    ) -> Future[None]:
        """Keep a client's plaintext evaluation of model ``version``, and the ε it says it
        has spent (``privacy``); durable when resolved.

        ``update_id`` names the update the report came with (``X-Hefl-Metrics``): a report
        of an update already kept is not kept again, so a resent update counts once.
        """
        self.check(version, metrics)
        if update_id is not None and not self._first_of(update_id):
            return self._journal.call(lambda: None)  # durable once what came before it is
        report: dict[str, Any] = {
            "client_id": client.client_id,
            "client_name": client.client_name,
            "version": version,
            "metrics": dict(metrics),
            "received_at": self._clock(),
        }
        if privacy is not None:
            report["privacy"] = dict(privacy)
        if update_id is not None:
            report["update_id"] = update_id

        def store() -> None:
            self._store.append_metrics(report)
            self._keep(report)

        return self._journal.call(store)

    def _first_of(self, update_id: str) -> bool:
        """Whether no report came with update ``update_id`` before (and note that one has).

        The ids are noted as reports are taken, so two resends of one update racing each
        other keep one report. As many ids as reports are remembered: a resend is answered
        only within the receipt window, far inside that.
        """
        with self._lock:
            if update_id in self._update_ids:
                return False
            self._note_update(update_id)
            return True

    def _note_update(self, update_id: str) -> None:
        self._update_ids[update_id] = None
        while len(self._update_ids) > self._max_reports:
            self._update_ids.popitem(last=False)

    def reports(self) -> list[dict[str, Any]]:
        """A copy of the kept reports, oldest first."""
        with self._lock:
            return list(self._reports)

    def latest(self) -> dict[str, dict[str, Any]]:
        """Each client's latest report, by client id."""
        with self._lock:
            return dict(self._latest)

    def privacy(self) -> dict[str, dict[str, Any]]:
        """Per client id, its report of the largest ε spent (of those that carry one)."""
        with self._lock:
            return dict(self._privacy)

    def pooled(self) -> dict[str, PooledMetric]:
        """Each metric over the clients' latest reports (``pooled_metrics``)."""
        return pooled_metrics(self.latest().values())


def parse_report(
    body: bytes,
) -> tuple[int, dict[str, int | float], dict[str, float] | None]:
    """The version, metrics and privacy spent of a ``MetricsReportCreate`` JSON body.

    Raises
    ------
    MetricsInvalidError
        Not such a body; the detail names each field at fault and never echoes input.
    """
    with client_input("the metrics report", MetricsInvalidError):
        try:
            report = MetricsReportCreate.model_validate_json(body)
        except ValidationError as exc:
            detail = validation_detail(exc)
            raise MetricsInvalidError(detail) from None
    privacy = report.privacy.model_dump(exclude_none=True) if report.privacy else None
    return report.version, report.metrics, privacy


def parse_report_header(
    value: str,
) -> tuple[int, dict[str, int | float], dict[str, float] | None]:
    """The version, metrics and privacy spent of a report that comes with an update
    (``X-Hefl-Metrics``): the JSON body of ``POST …/metrics``, at most
    ``MAX_REPORT_HEADER_BYTES`` bytes.

    Raises
    ------
    MetricsInvalidError
        Too long, or not such a report (``parse_report``).
    """
    # Starlette hands header values over decoded as latin-1: this gives the bytes back
    raw = value.encode("latin-1", errors="replace")
    if len(raw) > MAX_REPORT_HEADER_BYTES:
        raise MetricsInvalidError(
            f"the metrics header is longer than {MAX_REPORT_HEADER_BYTES} bytes"
        )
    return parse_report(raw)


def check_metrics(metrics: Mapping[str, float]) -> None:
    """``MetricsInvalidError`` unless ``metrics`` are 1-32 finite, bounded, well-named values."""
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


def _weight(metrics: Mapping[str, Any]) -> float:
    n = metrics.get("n_samples")
    return float(n) if isinstance(n, int) and n > 0 else 1.0


def pooled_metrics(latest: Iterable[Mapping[str, Any]]) -> dict[str, PooledMetric]:
    """Per metric, the mean of the reports that hold it, weighted by their ``n_samples``.

    ``latest`` is one report per client; ``sites`` counts those holding the metric (a
    metric undefined on a client's rows is left out of its report, and out of the pool).
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    sites: dict[str, int] = {}
    samples: dict[str, int] = {}
    for report in latest:
        metrics = report["metrics"]
        weight = _weight(metrics)
        n = metrics.get("n_samples")
        for name, value in metrics.items():
            if name == "n_samples":
                continue
            sums[name] = sums.get(name, 0.0) + weight * float(value)
            weights[name] = weights.get(name, 0.0) + weight
            sites[name] = sites.get(name, 0) + 1
            samples[name] = samples.get(name, 0) + (n if isinstance(n, int) else 0)
    return {
        name: PooledMetric(
            value=sums[name] / weights[name], sites=sites[name], n_samples=samples[name]
        )
        for name in sorted(sums)
    }


def client_metrics(report: Mapping[str, Any]) -> ClientMetrics:
    """A stored report as the status shows it: version, rows and values."""
    metrics = report["metrics"]
    n = metrics.get("n_samples")
    return ClientMetrics(
        version=int(report["version"]),
        n_samples=n if isinstance(n, int) else None,
        values={k: float(v) for k, v in sorted(metrics.items()) if k != "n_samples"},
    )


def client_privacy(report: Mapping[str, Any]) -> ClientPrivacy:
    """A stored report's ε spent as the status shows it."""
    spent = report["privacy"]
    target = spent.get("target_epsilon")
    return ClientPrivacy(
        epsilon=float(spent["epsilon"]),
        delta=float(spent["delta"]),
        target_epsilon=float(target) if target is not None else None,
        version=int(report["version"]),
    )


def metrics_by_version(reports: list[dict[str, Any]]) -> tuple[VersionSummary, ...]:
    """Per model version: how many reports, samples, and each metric's weighted mean."""
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
            weight = _weight(metrics)
            samples += n if isinstance(n, int) else 0
            for name, value in metrics.items():
                if name == "n_samples":
                    continue
                sums[name] = sums.get(name, 0.0) + weight * float(value)
                weights[name] = weights.get(name, 0.0) + weight
        mean = {name: sums[name] / weights[name] for name in sorted(sums)}
        received = [float(r["received_at"]) for r in group if r.get("received_at") is not None]
        clients = {
            str(r["client_id"]): {
                k: float(v) for k, v in sorted(r["metrics"].items()) if k != "n_samples"
            }
            for r in group
        }
        out.append(
            VersionSummary(
                version=version,
                reports=len(group),
                n_samples=samples,
                mean=mean,
                received_at=max(received, default=None),
                clients=dict(sorted(clients.items())),
            )
        )
    return tuple(out)
