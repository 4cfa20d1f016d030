"""The plain values the service takes and answers with; routes convert them to and from schemas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from fl_server.receipts import UpdateReceipt

__all__ = [
    "BodyReader",
    "ClientMetrics",
    "ClientView",
    "FailedJob",
    "JobCreated",
    "JobState",
    "JobView",
    "LayoutSet",
    "ModelDownload",
    "PooledMetric",
    "ServerStatusView",
    "StatusView",
    "StopReason",
    "StopRuleView",
    "UpdateAck",
    "VersionSummary",
]

BodyReader = Callable[[int], Awaitable[bytes]]
"""Reads a request body, refused as soon as it is known to exceed the given number of bytes."""


class JobState(StrEnum):
    WAITING = "waiting_for_initial_model"
    TRAINING = "training"
    PAUSED = "paused"
    DONE = "done"


class StopReason(StrEnum):
    """Why a job is done: the first stop rule met, or the administrator's stop."""

    TARGET_UPDATES = "target_updates"
    MAX_WALL_SECONDS = "max_wall_seconds"
    TARGET_METRIC = "target_metric"
    STOPPED = "stopped"


@dataclass(frozen=True)
class JobView:
    """A job as the administrator and clients see it; ``created_at`` in seconds since the epoch."""

    name: str
    description: str
    state: JobState
    stop_reason: StopReason | None
    version: int
    updates_applied: int
    target_updates: int | None
    spec_sha256: str
    key_epoch: int
    profile: str
    layout_fingerprint: str | None
    created_at: float
    training_seconds: float
    key_id: str | None = None


@dataclass(frozen=True)
class JobCreated:
    """The job after ``POST /v1/jobs``, and whether this call created it (else it existed)."""

    job: JobView
    created: bool


@dataclass(frozen=True)
class FailedJob:
    """A job directory the server could not open at startup, and why."""

    name: str
    error: str


@dataclass(frozen=True)
class LayoutSet:
    """The job's layout after a ``set``: its fingerprint, and whether this call set it."""

    fingerprint: str
    created: bool


@dataclass(frozen=True)
class ModelDownload:
    """The published model for one download; ``body`` is ``None`` when the client has it."""

    etag: str
    version: int
    body: bytes | None = field(repr=False)


@dataclass(frozen=True)
class UpdateAck:
    """The answer to an update: its receipt, and whether it was a retry of an applied one."""

    receipt: UpdateReceipt
    duplicate: bool


@dataclass(frozen=True)
class ClientMetrics:
    """A client's latest evaluation report: the model version, its rows and the values."""

    version: int
    n_samples: int | None
    values: dict[str, float]


@dataclass(frozen=True)
class ClientView:
    """One client as a job's status shows it; times are seconds since the epoch."""

    client_name: str | None
    updates_applied: int
    updates_rejected: int
    metrics_reports: int
    last_seen: float | None
    last_update_at: float | None
    latest_metrics: ClientMetrics | None


@dataclass(frozen=True)
class PooledMetric:
    """One metric over clients' latest reports, weighted by their ``n_samples``."""

    value: float
    sites: int
    n_samples: int


@dataclass(frozen=True)
class StopRuleView:
    """One stop rule of a job and how far it is: ``progress`` against ``target``.

    For ``target_metric``, ``progress`` is the pooled value (``None`` until a client
    reported it) and ``sites`` the clients it pools, which must reach ``min_sites``.
    """

    rule: StopReason
    target: float
    progress: float | None
    met: bool
    metric: str | None = None
    sites: int | None = None
    min_sites: int | None = None


@dataclass(frozen=True)
class VersionSummary:
    """The evaluation reports on one model version; ``mean`` weighted by ``n_samples``."""

    version: int
    reports: int
    n_samples: int
    mean: dict[str, float]


@dataclass(frozen=True)
class StatusView:
    """Everything a job's status page and its Prometheus series show."""

    job: JobView
    published_version: int
    staleness_policy: dict[str, float | int | str]
    buffer_size: int
    updates_buffered: int
    updates_rejected: dict[str, int]
    duplicates: int
    receipts_kept: int
    staleness_histogram: dict[int, int]
    mean_weight: float | None
    clients: dict[str, ClientView]
    bytes_in: int
    bytes_out: int
    slots_in_use: int
    max_training: int
    queued_updates: int
    metrics: tuple[VersionSummary, ...]
    pooled_metrics: dict[str, PooledMetric]
    stop_rules: tuple[StopRuleView, ...]


@dataclass(frozen=True)
class ServerStatusView:
    """The server's jobs, and the job directories it could not open."""

    jobs: tuple[JobView, ...]
    failed_jobs: tuple[FailedJob, ...]
