"""Clients' evaluation reports: validated, stored durably, summarized per model version."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from pydantic import ValidationError

from fl_server.domain import BodyReader, VersionSummary
from fl_server.errors import JobNotStartedError, MetricsInvalidError, VersionAheadError
from fl_server.job import JobLifecycle
from fl_server.journal import Journal
from fl_server.schemas import MetricsReportCreate
from fl_server.store import Store
from hefl_wire import AccessClaims

__all__ = ["MetricsReports", "check_metrics", "metrics_by_version", "parse_report"]

_METRIC_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_METRICS_PER_REPORT = 32
# Metrics are losses, accuracies and sample counts; a bound keeps every average finite.
_MAX_METRIC_MAGNITUDE = 1e12


class MetricsReports:
    """The plaintext evaluation reports clients send on the models they pull.

    Keeps the newest ``max_reports`` in memory; every kept report is also in the store.

    Parameters
    ----------
    lifecycle
        The job: a report is on a model version that exists.
    store, journal
        Where reports are kept, written after every log record before them.
    max_reports, max_body_bytes
        How many reports are kept, and the largest report body read.
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
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifecycle = lifecycle
        self._store = store
        self._journal = journal
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: deque[dict[str, Any]] = deque(maxlen=max_reports)

    def load(self) -> None:
        """Read the stored reports (at startup, before any is recorded)."""
        for report in self._store.load_metrics():
            self._reports.append(report)

    async def receive(self, client: AccessClaims, read_body: BodyReader) -> int:
        """Read, check and keep ``client``'s report; the version it is on, once durable."""
        version, metrics = parse_report(await read_body(self._max_body_bytes))
        await asyncio.wrap_future(self.record(client, version, metrics))
        return version

    def record(
        self, client: AccessClaims, version: int, metrics: Mapping[str, float]
    ) -> Future[None]:
        """Keep a client's plaintext evaluation of model ``version``; durable when resolved."""
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
                self._reports.append(report)

        return self._journal.call(store)

    def reports(self) -> list[dict[str, Any]]:
        """A copy of the kept reports, oldest first."""
        with self._lock:
            return list(self._reports)


def parse_report(body: bytes) -> tuple[int, dict[str, int | float]]:
    """The version and metrics of a ``MetricsReportCreate`` JSON body.

    Raises
    ------
    MetricsInvalidError
        Not such a body; the detail names each field at fault and never echoes input.
    """
    try:
        report = MetricsReportCreate.model_validate_json(body)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise MetricsInvalidError(detail) from None
    return report.version, report.metrics


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
            weight = float(n) if isinstance(n, int) and n > 0 else 1.0
            samples += n if isinstance(n, int) else 0
            for name, value in metrics.items():
                if name == "n_samples":
                    continue
                sums[name] = sums.get(name, 0.0) + weight * float(value)
                weights[name] = weights.get(name, 0.0) + weight
        mean = {name: sums[name] / weights[name] for name in sorted(sums)}
        out.append(
            VersionSummary(version=version, reports=len(group), n_samples=samples, mean=mean)
        )
    return tuple(out)
