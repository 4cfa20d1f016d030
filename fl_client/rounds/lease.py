"""Two requests per update: the pull takes the training lease, the update carries the metrics."""

# docs/protocol.md ("One update in two requests"). In steady state a round costs
# POST …/leases (a training slot, and the model blocks changed since the cached version)
# and POST …/updates with the metrics of the version trained on in X-Hefl-Metrics (the
# applied update gives the slot back). The job and its spec are read once per session,
# and the job again only after the server said it changed (paused, done, not started,
# another key epoch or layout). A server without …/leases (404 not_found, an older
# fl_server) gets the separate requests of before for the rest of the session, as does a
# client told FLCLIENT_ROUND_REQUESTS=separate.
#
# One request per update (FLCLIENT_ROUND_REQUESTS=one, the default): the update asks
# POST …/updates?lease=next&since=V, and a 200 carries the next round's lease and model
# (the blocks changed since the cached version V), which the next round takes instead of
# POST …/leases. Where the server answers the plain 202 (FedBuff, rounds, a refused
# lease, an older server that ignores the parameter) the next round leases as above.

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from crypto import ModelLayout
from fl_client.errors import (
    InvalidRequestError,
    JobNotTrainingError,
    JobRotatingError,
    LeaseRotatingError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    TooStaleError,
    TransportError,
)
from fl_client.events import ClientWarning, WaitingForSlot
from fl_client.rounds.context import RoundContext
from fl_client.rounds.job import current_job
from fl_client.rounds.port import JobInfo, ModelDownload, UpdateAck, metrics_report_json
from fl_client.rounds.pull import Pull, download_bar, pull_model
from fl_client.state import ModelCache, PendingUpdate
from fl_client.training import EvalResult

__all__ = [
    "MAX_METRICS_HEADER_BYTES",
    "give_back_next_lease",
    "metrics_report",
    "model_lease",
    "push",
    "round_job",
    "training_slot",
]

log = logging.getLogger(__name__)

MAX_METRICS_HEADER_BYTES = 4096
"""The longest ``X-Hefl-Metrics`` the server takes (docs/protocol.md)."""

T = TypeVar("T")


def round_job(ctx: RoundContext) -> JobInfo:
    """The job as the round needs it: the one last read while it is training (combined
    requests), else read again (``current_job``: started, a pause waited out)."""
    job = ctx.job
    if ctx.combined_requests and job is not None and job.state == "training":
        return job
    ctx.job = job = current_job(ctx)
    return job


@contextmanager
def model_lease(ctx: RoundContext, layout: ModelLayout, job: JobInfo) -> Iterator[Pull | None]:
    """The model to train on, pulled under a training slot, waiting as long as the server
    asks (429); ``None`` when the lease is refused because the job is done.

    Combined requests take both with one ``POST …/leases``; the update that follows gives
    the slot back, a round that fails on the way gives it back itself (but not for a
    ``too_stale`` update: the next round renews it at once). Separate requests take the
    slot, pull, and give the slot back (``training_slot``).
    """
    if ctx.combined_requests:
        lease = _Lease(ctx)
        try:
            pulled = _wait_for_slot(ctx, lambda: pull_model(ctx, layout, job, fetch=lease.fetch))
        except JobNotTrainingError as exc:
            lease.failed(exc)
            yield None
            return
        except NotFoundError as exc:
            if exc.code != "not_found" or lease.held:
                lease.failed(exc)
                raise
            # an fl_server older than the path: the separate requests, for this session
            log.info("the server has no POST …/leases; using separate requests")
            ctx.combined_requests = False
        except JobRotatingError as exc:
            lease.failed(exc)
            raise LeaseRotatingError(str(exc), status=exc.status, code=exc.code) from exc
        except BaseException as exc:
            lease.failed(exc)
            raise
        else:
            try:
                yield pulled
            except BaseException as exc:
                lease.failed(exc)
                raise
            return
    with training_slot(ctx):
        yield pull_model(ctx, layout, job)


class _Lease:
    """``pull_model``'s fetch over ``POST …/leases``, and what a failed round gives back."""

    def __init__(self, ctx: RoundContext) -> None:
        self._ctx = ctx
        self.held = False

    def fetch(self, ctx: RoundContext, cache: ModelCache | None) -> ModelDownload | None:
        """The model; ``None`` when it is the cached version (the lease's answer to that
        has no block). The lease the last update's answer carried is taken when it was
        asked against this cache's version."""
        since = cache.version if cache else None
        carried, ctx.next_lease = ctx.next_lease, None
        if carried is not None and carried[0] == since:
            leased = carried[1]
        else:
            with ctx.events.bar(None, "pull", "B", unit_scale=True) as bar:
                leased = ctx.server.lease_model(since=since, on_chunk=download_bar(bar))
        self.held = True
        if cache is not None and leased.download.version == cache.version:
            return None
        return leased.download

    def failed(self, exc: BaseException) -> None:
        """A round that took a lease and fails gives it back (but for a ``too_stale``
        update: the next round renews the lease at once); a refusal of the server may
        mean the job changed: it is read again."""
        if isinstance(exc, TooStaleError):
            return
        self._ctx.next_lease = None  # the slot it renewed is given back here
        if self.held:
            _release(self._ctx)
        if isinstance(exc, ServiceError):
            self._ctx.job = None


def give_back_next_lease(ctx: RoundContext) -> None:
    """Give back the lease the last update's answer carried, if no round took it (the
    run ends): the slot is another hospital's to take at once, not at its expiry."""
    if ctx.next_lease is not None:
        ctx.next_lease = None
        _release(ctx)


@contextmanager
def training_slot(ctx: RoundContext) -> Iterator[None]:
    """Hold one of the server's training slots, waiting as long as it asks (429)."""
    _wait_for_slot(ctx, ctx.server.request_slot)
    try:
        yield
    finally:
        _release(ctx)


def _release(ctx: RoundContext) -> None:
    try:
        ctx.server.release_slot()
    except (ServiceError, TransportError) as exc:
        log.info("could not give the training slot back: %s", exc)


def _wait_for_slot(ctx: RoundContext, take: Callable[[], T]) -> T:
    settings = ctx.settings
    started = ctx.clock()
    attempt = 0
    while True:
        try:
            return take()
        except RateLimitedError as exc:
            attempt += 1
            waited = ctx.clock() - started
            if settings.slot_wait_max is not None and waited >= settings.slot_wait_max:
                raise
            delay = exc.retry_after
            if delay is None:
                delay = min(settings.backoff_max, settings.backoff_base * 2**attempt)
            ctx.events.emit(WaitingForSlot(retry_after=round(delay, 1)))
            ctx.sleep(delay)


def metrics_report(
    version: int, evaluation: EvalResult, privacy: Mapping[str, float] | None = None
) -> dict[str, object]:
    """The report of ``POST …/metrics`` (and of ``X-Hefl-Metrics``) for a model version,
    with the ε this hospital has spent when the study is private."""
    return metrics_report_json(version, evaluation.to_metrics(), privacy)


def push(ctx: RoundContext, pending: PendingUpdate) -> UpdateAck:
    """Send a journaled update, with the metrics report it carries when requests are
    combined. A report the server refuses (``metrics_invalid``) is dropped with a warning
    and the update sent again without it: a metric never costs an update."""
    declared = pending.summary.get("samples")
    # declared with the update (X-Hefl-Samples); a resend after a crash declares the same
    samples = declared if isinstance(declared, int) else None
    header = _metrics_header(ctx, pending) if ctx.combined_requests else None
    lease_next = ctx.combined_requests and ctx.lease_with_update
    since = ctx.cache.version if ctx.cache is not None else None

    def send(metrics: str | None) -> UpdateAck:
        ack = ctx.server.push_update(
            pending.envelope, metrics, samples=samples, lease_next=lease_next, since=since
        )
        if ack.leased is not None:
            ctx.next_lease = (since, ack.leased)
        return ack

    if header is None:
        return send(None)
    try:
        return send(header)
    except InvalidRequestError as exc:
        if exc.code != "metrics_invalid":
            raise
        _not_reported(ctx, pending, str(exc))
        return send(None)


def _metrics_header(ctx: RoundContext, pending: PendingUpdate) -> str | None:
    report = pending.summary.get("metrics")
    if report is None:
        return None
    try:
        # compact ASCII JSON: a header value; NaN or infinity is no JSON the server takes
        text = json.dumps(report, separators=(",", ":"), allow_nan=False)
    except ValueError:
        _not_reported(ctx, pending, "a metric is not a finite number")
        return None
    if len(text) > MAX_METRICS_HEADER_BYTES:
        _not_reported(ctx, pending, f"the report is longer than {MAX_METRICS_HEADER_BYTES} B")
        return None
    return text


def _not_reported(ctx: RoundContext, pending: PendingUpdate, why: str) -> None:
    report = pending.summary.get("metrics")
    version = report.get("version") if isinstance(report, dict) else None
    ctx.events.emit(ClientWarning(f"metrics for version {version} not reported: {why}"))
