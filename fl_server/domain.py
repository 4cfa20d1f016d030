"""The plain values the service takes and answers with; routes convert them to and from schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from fl_server.receipts import UpdateReceipt
from fl_server.snapshot import EnvelopeBody

__all__ = [
    "BodyReader",
    "ClientMetrics",
    "ClientView",
    "FailedJob",
    "IntegrityReportView",
    "IntegrityState",
    "IntegrityStatus",
    "IntegrityView",
    "JobCreated",
    "JobState",
    "JobView",
    "LayoutSet",
    "LeasedModel",
    "ModelDownload",
    "PooledMetric",
    "ProbeOutcome",
    "ProbeRecordView",
    "ProbeView",
    "QuarantineView",
    "RemovedUpdateView",
    "RepairView",
    "RotationDoneView",
    "RotationStatus",
    "RotationView",
    "ServerStatusView",
    "StatusView",
    "StopReason",
    "StopRuleView",
    "StreamingBodyReader",
    "UpdateAck",
    "VersionSummary",
    "body_chunks",
]

BodyReader = Callable[[int], Awaitable[bytes]]
"""Reads a request body, refused as soon as it is known to exceed the given number of bytes."""


@runtime_checkable
class StreamingBodyReader(Protocol):
    """A ``BodyReader`` that also hands the body out chunk by chunk as it arrives."""

    def __call__(self, limit: int) -> Awaitable[bytes]: ...

    def chunks(self, limit: int) -> AsyncIterator[bytes]: ...


async def body_chunks(read_body: BodyReader, limit: int) -> AsyncIterator[bytes]:
    """The body chunk by chunk when ``read_body`` can stream it, else whole in one piece."""
    if isinstance(read_body, StreamingBodyReader):
        async for chunk in read_body.chunks(limit):
            yield chunk
    else:
        yield await read_body(limit)


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


class IntegrityState(StrEnum):
    """Where a job stands with the integrity of its model (docs/design.md, "Integrity")."""

    HEALTHY = "healthy"
    LOCATING = "locating"
    REPAIRING = "repairing"


@dataclass(frozen=True)
class ProbeView:
    """What the server asks clients to check: version ``version`` as rebuilt, or (with
    ``update_id``) that version plus one update, for its sender ``client_id`` only."""

    version: int
    update_id: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class IntegrityView:
    """A job's integrity as ``Job`` shows it: its state and the probe it offers."""

    state: IntegrityState = IntegrityState.HEALTHY
    probe: ProbeView | None = None


@dataclass(frozen=True)
class RotationView:
    """A key rotation under way, as ``Job`` shows it: the epoch the job moves to (and its
    key id), the version to re-encrypt, the hospital asked to and until when."""

    key_epoch: int
    key_id: str | None
    version: int
    client_id: str | None
    deadline: float | None
    started_at: float


@dataclass(frozen=True)
class RotationDoneView:
    """One key rotation the job went through (from job.json)."""

    from_epoch: int
    to_epoch: int
    key_id: str | None
    version: int
    client_id: str
    started_at: float
    at: float


@dataclass(frozen=True)
class RotationStatus:
    """Key rotations in the status (the one under way is ``JobView.rotation``): those
    done, the hospitals asked for the last one, updates under an old epoch refused (their
    hospitals retrain them) since the server started, and why the last attempt failed."""

    done: tuple[RotationDoneView, ...] = ()
    asked: tuple[str, ...] = ()
    updates_retrained: int = 0
    detail: str | None = None


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
    integrity: IntegrityView = field(default_factory=IntegrityView)
    rotation: RotationView | None = None


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
    """The published model for one download; ``body`` is ``None`` when the client has it.

    ``body`` is the envelope whole, or an ``EnvelopeBody`` to stream block by block.
    """

    etag: str
    version: int
    body: bytes | EnvelopeBody | None = field(repr=False)


@dataclass(frozen=True)
class LeasedModel:
    """A training lease and the model to train on, taken in one request (``POST …/leases``):
    the lease's expiry (seconds since the epoch), the job as it is now, and the download."""

    expires_at: float
    job: JobView
    download: ModelDownload


@dataclass(frozen=True)
class UpdateAck:
    """The answer to an update: its receipt, and whether it was a retry of an applied one;
    ``leased``: the next round's lease and model, when the update asked for them and got
    them (``POST …/updates?lease=next``)."""

    receipt: UpdateReceipt
    duplicate: bool
    leased: LeasedModel | None = None


@dataclass(frozen=True)
class ClientMetrics:
    """A client's latest evaluation report: the model version, its rows and the values."""

    version: int
    n_samples: int | None
    values: dict[str, float]


@dataclass(frozen=True)
class ClientPrivacy:
    """The ε a client has spent on the job, at ``delta``, as of model ``version``.

    ``level`` ``sample`` (DP-SGD, the study's ``[privacy]``): the ε the client says it has
    spent, of its ``target_epsilon``, in its report on ``version``; the server checks the
    form only: it cannot know what a hospital spent. ``level`` ``hospital``: the ε the
    server computed from the client's ``updates`` noised updates applied
    (``fl_server.hospital_privacy``); no target.
    """

    epsilon: float
    delta: float
    target_epsilon: float | None
    version: int
    level: str = "sample"
    updates: int | None = None


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
    mean_staleness: float | None = None
    mean_weight: float | None = None
    privacy: ClientPrivacy | None = None


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
    """The evaluation reports on one model version; ``mean`` weighted by ``n_samples``.

    ``received_at`` is when the last of them arrived; ``clients`` each client's values
    (its last report on the version), by client id: the learning curves of the page.
    """

    version: int
    reports: int
    n_samples: int
    mean: dict[str, float]
    received_at: float | None = None
    clients: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class IntegrityReportView:
    """One client's check of a model it decrypted; ``update_id`` answers a probe of it."""

    client_id: str
    client_name: str | None
    version: int
    ok: bool
    check: str | None
    blocks: tuple[int, ...]
    update_id: str | None
    received_at: float


class ProbeOutcome(StrEnum):
    """How a probe ended: its answer, no answer in time, or no longer needed."""

    PENDING = "pending"
    OK = "ok"
    BAD = "bad"
    TIMEOUT = "timeout"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class ProbeRecordView:
    """A probe the server offered, and how it ended (``pending`` while it is offered)."""

    probe: ProbeView
    started_at: float
    outcome: ProbeOutcome
    ended_at: float | None


@dataclass(frozen=True)
class RemovedUpdateView:
    """An update a repair took out: the version it was part of and its applied weight."""

    update_id: str
    client_id: str
    client_name: str | None
    version: int
    weight: float


@dataclass(frozen=True)
class RepairView:
    """A repair: what it removed, whom it quarantined, the version it made, versions lost."""

    entry: int
    version: int
    at: float
    reason: str
    first_bad_version: int | None
    versions_lost: int
    removed: tuple[RemovedUpdateView, ...]
    quarantined: tuple[str, ...]


@dataclass(frozen=True)
class QuarantineView:
    """A quarantined client: its updates are refused until an administrator releases it."""

    client_id: str
    client_name: str | None
    since: float
    repair: int


@dataclass(frozen=True)
class IntegrityStatus:
    """A job's integrity in its status: the search, the reports, probes, repairs, quarantine.

    ``detail`` says in one line what is going on (or what stops the search); ``good`` and
    ``bad`` are the bounds of the search (the newest version known good, the first
    reported bad). The counters are since the job began (reports: those kept).
    """

    state: IntegrityState
    probe: ProbeView | None
    detail: str | None
    good: int | None
    bad: int | None
    reports: tuple[IntegrityReportView, ...]
    probes: tuple[ProbeRecordView, ...]
    repairs: tuple[RepairView, ...]
    quarantined: tuple[QuarantineView, ...]
    reports_total: int
    updates_removed: int


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
    integrity: IntegrityStatus
    rotations: RotationStatus = field(default_factory=RotationStatus)
    # policy, weighting, schedule and, with rounds, the open round (plain JSON)
    server_policy: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerStatusView:
    """The server's jobs, and the job directories it could not open."""

    jobs: tuple[JobView, ...]
    failed_jobs: tuple[FailedJob, ...]
