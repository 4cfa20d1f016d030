"""JSON request and response bodies of the REST API (ciphertexts travel as octet-stream)."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from fl_server.domain import (
    ClientMetrics,
    ClientPrivacy,
    ClientView,
    FailedJob,
    IntegrityReportView,
    IntegrityState,
    IntegrityStatus,
    IntegrityView,
    JobState,
    JobView,
    LayoutSet,
    PooledMetric,
    ProbeOutcome,
    ProbeRecordView,
    ProbeView,
    QuarantineView,
    RemovedUpdateView,
    RepairView,
    RotationDoneView,
    RotationStatus,
    RotationView,
    ServerStatusView,
    StatusView,
    StopReason,
    StopRuleView,
    UpdateAck,
    VersionSummary,
)

__all__ = [
    "ClientMetricsPublic",
    "ClientPrivacyPublic",
    "ClientStatus",
    "FailedJobPublic",
    "HealthPublic",
    "InitialModelAccepted",
    "IntegrityAccepted",
    "IntegrityPublic",
    "IntegrityReportCreate",
    "IntegrityReportPublic",
    "IntegrityStatusPublic",
    "JobPublic",
    "JobState",
    "JobStatusPublic",
    "LayoutAccepted",
    "MetricsAccepted",
    "MetricsReportCreate",
    "PooledMetricPublic",
    "PrivacyReportCreate",
    "ProbePublic",
    "ProbeRecordPublic",
    "QuarantinedPublic",
    "RemovedUpdatePublic",
    "RepairCreate",
    "RepairPublic",
    "RotationDonePublic",
    "RotationPublic",
    "RotationStatusPublic",
    "ServerStatusPublic",
    "SlotLease",
    "StopReason",
    "StopRulePublic",
    "UpdateAccepted",
    "VersionMetrics",
    "timestamp_to_datetime",
]


def timestamp_to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _datetime_or_none(ts: float | None) -> datetime | None:
    return timestamp_to_datetime(ts) if ts is not None else None


def _fields(view: Any) -> dict[str, Any]:
    """A domain dataclass's fields by name, not copied: each view mirrors its schema."""
    return {f.name: getattr(view, f.name) for f in fields(view)}


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class ProbePublic(BaseModel):
    version: int = Field(description="the version to check, rebuilt by the server")
    update_id: str | None = Field(
        description="with it: that version plus this update, for its sender only"
    )
    client_id: str | None = Field(description="the sender of update_id, who alone may check it")

    @classmethod
    def of(cls, probe: ProbeView) -> ProbePublic:
        return cls(**_fields(probe))


def _probe_or_none(probe: ProbeView | None) -> ProbePublic | None:
    return ProbePublic.of(probe) if probe is not None else None


class IntegrityPublic(BaseModel):
    state: IntegrityState
    probe: ProbePublic | None = Field(description="what clients are asked to check, if any")

    @classmethod
    def of(cls, integrity: IntegrityView) -> IntegrityPublic:
        return cls(state=integrity.state, probe=_probe_or_none(integrity.probe))


class RotationPublic(BaseModel):
    key_epoch: int = Field(description="the key epoch the job moves to")
    key_id: str | None = Field(description="that epoch's key id, as keyauth states it")
    version: int = Field(description="the version to re-encrypt")
    client_id: str | None = Field(description="the hospital asked to re-encrypt it")
    deadline: datetime | None = Field(description="until when it is asked; then another is")
    started_at: datetime

    @classmethod
    def of(cls, rotation: RotationView) -> RotationPublic:
        return cls(
            **{
                **_fields(rotation),
                "deadline": _datetime_or_none(rotation.deadline),
                "started_at": timestamp_to_datetime(rotation.started_at),
            }
        )


class RotationDonePublic(BaseModel):
    from_epoch: int
    to_epoch: int
    key_id: str | None
    version: int = Field(description="the first version under to_epoch")
    client_id: str = Field(description="the hospital that re-encrypted the model")
    started_at: datetime
    at: datetime = Field(description="when the swap was durable")

    @classmethod
    def of(cls, done: RotationDoneView) -> RotationDonePublic:
        return cls(
            **{
                **_fields(done),
                "started_at": timestamp_to_datetime(done.started_at),
                "at": timestamp_to_datetime(done.at),
            }
        )


class RotationStatusPublic(BaseModel):
    done: list[RotationDonePublic] = Field(description="the job's key rotations, oldest first")
    asked: list[str] = Field(description="the hospitals asked to re-encrypt, last rotation")
    updates_retrained: int = Field(
        description="updates under an old key epoch refused since the server started "
        "(job_rotating, key_epoch_mismatch): each is trained again by its hospital"
    )
    detail: str | None = Field(description="why the last rotation ended without a swap")

    @classmethod
    def of(cls, status: RotationStatus) -> RotationStatusPublic:
        return cls(
            **{
                **_fields(status),
                "done": [RotationDonePublic.of(d) for d in status.done],
                "asked": list(status.asked),
            }
        )


class JobPublic(BaseModel):
    name: str
    description: str
    state: JobState
    stop_reason: StopReason | None = Field(description="why the job is done; null until it is")
    version: int
    updates_applied: int
    target_updates: int | None = Field(description="the spec's stop.target_updates, if set")
    spec_sha256: str = Field(description="hex SHA-256 of the spec's canonical JSON")
    key_epoch: int
    profile: str
    layout_fingerprint: str | None
    created_at: datetime
    training_seconds: float = Field(description="time spent in state training (not paused)")
    key_id: str | None = Field(
        description="hex SHA-256 of the key epoch's secret context when the job was created "
        "(keyauth's signed GET /v1/keys/key-id); a hospital trains only with a context of "
        "this id. null only on a server given fixed key material without one (tests)"
    )
    integrity: IntegrityPublic
    rotation: RotationPublic | None = Field(
        description="the key rotation under way (docs/fl_server.md, Key rotation), if any"
    )

    @classmethod
    def of(cls, job: JobView) -> JobPublic:
        return cls(**_job_fields(job))


def _job_fields(job: JobView) -> dict[str, Any]:
    return {
        **_fields(job),
        "created_at": timestamp_to_datetime(job.created_at),
        "integrity": IntegrityPublic.of(job.integrity),
        "rotation": RotationPublic.of(job.rotation) if job.rotation is not None else None,
    }


class LayoutAccepted(BaseModel):
    fingerprint: str

    @classmethod
    def of(cls, layout: LayoutSet) -> LayoutAccepted:
        return cls(fingerprint=layout.fingerprint)


class InitialModelAccepted(BaseModel):
    version: int
    state: JobState

    @classmethod
    def of(cls, job: JobView) -> InitialModelAccepted:
        return cls(version=job.version, state=job.state)


class UpdateAccepted(BaseModel):
    update_id: str
    version: int = Field(description="the model version that holds (or, buffered, will hold) it")
    staleness: int
    weight: float = Field(description="the staleness weight applied, after quantization")
    duplicate: bool

    @classmethod
    def of(cls, ack: UpdateAck) -> UpdateAccepted:
        receipt = ack.receipt
        return cls(
            update_id=str(receipt.update_id),
            version=receipt.version,
            staleness=receipt.staleness,
            weight=receipt.weight,
            duplicate=ack.duplicate,
        )


class SlotLease(BaseModel):
    expires_at: datetime


class PrivacyReportCreate(BaseModel):
    """What a hospital under a study's ``[privacy]`` says it has spent (form checked only)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epsilon: StrictInt | StrictFloat = Field(ge=0, le=1e6, description="the ε spent so far")
    delta: StrictInt | StrictFloat = Field(gt=0, lt=1, description="the δ it is spent at")
    target_epsilon: StrictInt | StrictFloat | None = Field(
        default=None, gt=0, le=1e6, description="the study's ε for each hospital"
    )


class MetricsReportCreate(BaseModel):
    version: int = Field(ge=0, description="the model version the metrics were computed on")
    metrics: dict[str, StrictInt | StrictFloat] = Field(
        description="plaintext evaluation metrics, e.g. loss, accuracy, n_samples"
    )
    privacy: PrivacyReportCreate | None = Field(
        default=None, description="the ε this hospital has spent (a study with [privacy])"
    )


class MetricsAccepted(BaseModel):
    version: int


class IntegrityReportCreate(BaseModel):
    """``POST /v1/jobs/{job}/integrity``: a client's check of a model version it decrypted."""

    model_config = ConfigDict(allow_inf_nan=False)

    version: StrictInt = Field(ge=0, description="the model version checked")
    ok: StrictBool = Field(description="whether every check passed")
    check: Literal["finite", "range", "canary"] | None = Field(
        default=None, description="the check that failed (null when ok)"
    )
    blocks: list[StrictInt] = Field(
        default_factory=list, max_length=100_000, description="the blocks that failed"
    )
    update_id: uuid.UUID | None = Field(
        default=None, description="the answer to a probe of this update (version + update)"
    )


class IntegrityAccepted(BaseModel):
    state: IntegrityState = Field(description="the job's integrity state after the report")


class RepairCreate(BaseModel):
    """``POST /v1/jobs/{job}/repairs``: the administrator removes updates by hand."""

    update_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)
    quarantine: StrictBool = Field(
        default=True, description="quarantine the senders of the removed updates"
    )


class ClientMetricsPublic(BaseModel):
    version: int = Field(description="the model version the client evaluated")
    n_samples: int | None = Field(description="its held-out rows")
    values: dict[str, float]

    @classmethod
    def of(cls, metrics: ClientMetrics) -> ClientMetricsPublic:
        return cls(**_fields(metrics))


class ClientPrivacyPublic(BaseModel):
    epsilon: float = Field(
        description="the ε the client has spent: its own report (sample level, DP-SGD) or "
        "the server's count of its noised updates (hospital level)"
    )
    delta: float
    target_epsilon: float | None
    version: int = Field(
        description="the model version of the report that said so (sample level), or the "
        "model's version when computed (hospital level)"
    )
    level: Literal["sample", "hospital"] = Field(
        default="sample", description="the study's [privacy] level"
    )
    updates: int | None = Field(
        default=None,
        description="hospital level: the client's applied updates, each noised by the server",
    )

    @classmethod
    def of(cls, privacy: ClientPrivacy) -> ClientPrivacyPublic:
        return cls(**_fields(privacy))


class ClientStatus(BaseModel):
    client_name: str | None
    updates_applied: int
    updates_rejected: int
    metrics_reports: int
    last_seen: datetime | None
    last_update_at: datetime | None
    latest_metrics: ClientMetricsPublic | None = Field(description="its latest report")
    mean_staleness: float | None = Field(
        default=None, description="mean staleness of its applied updates (versions)"
    )
    mean_weight: float | None = Field(
        default=None, description="mean staleness weight applied to its updates"
    )
    privacy: ClientPrivacyPublic | None = Field(
        default=None, description="the ε it has spent, as it last reported (a study with [privacy])"
    )

    @classmethod
    def of(cls, client: ClientView) -> ClientStatus:
        latest = client.latest_metrics
        return cls(
            **{
                **_fields(client),
                "last_seen": _datetime_or_none(client.last_seen),
                "last_update_at": _datetime_or_none(client.last_update_at),
                "latest_metrics": ClientMetricsPublic.of(latest) if latest else None,
                "privacy": ClientPrivacyPublic.of(client.privacy) if client.privacy else None,
            }
        )


class PooledMetricPublic(BaseModel):
    value: float = Field(description="the mean of clients' latest values, weighted by n_samples")
    sites: int = Field(description="clients whose latest report holds the metric")
    n_samples: int

    @classmethod
    def of(cls, pooled: PooledMetric) -> PooledMetricPublic:
        return cls(**_fields(pooled))


class StopRulePublic(BaseModel):
    rule: StopReason
    target: float
    progress: float | None = Field(description="updates, seconds, or the pooled metric value")
    met: bool
    metric: str | None = None
    sites: int | None = None
    min_sites: int | None = None

    @classmethod
    def of(cls, rule: StopRuleView) -> StopRulePublic:
        return cls(**_fields(rule))


class VersionMetrics(BaseModel):
    version: int
    reports: int
    n_samples: int
    mean: dict[str, float] = Field(description="per metric, weighted by n_samples when given")
    received_at: datetime | None = Field(
        default=None, description="when the last report on this version arrived"
    )
    clients: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="by client id, its values on this version (its last report on it)",
    )

    @classmethod
    def of(cls, summary: VersionSummary) -> VersionMetrics:
        return cls(**{**_fields(summary), "received_at": _datetime_or_none(summary.received_at)})


class IntegrityReportPublic(BaseModel):
    client_id: str
    client_name: str | None
    version: int
    ok: bool
    check: str | None
    blocks: list[int]
    update_id: str | None = Field(description="the update this report checked (a probe)")
    received_at: datetime

    @classmethod
    def of(cls, report: IntegrityReportView) -> IntegrityReportPublic:
        return cls(
            **{
                **_fields(report),
                "blocks": list(report.blocks),
                "received_at": timestamp_to_datetime(report.received_at),
            }
        )


class ProbeRecordPublic(BaseModel):
    probe: ProbePublic
    started_at: datetime
    outcome: ProbeOutcome
    ended_at: datetime | None

    @classmethod
    def of(cls, record: ProbeRecordView) -> ProbeRecordPublic:
        return cls(
            probe=ProbePublic.of(record.probe),
            started_at=timestamp_to_datetime(record.started_at),
            outcome=record.outcome,
            ended_at=_datetime_or_none(record.ended_at),
        )


class RemovedUpdatePublic(BaseModel):
    update_id: str
    client_id: str
    client_name: str | None
    version: int = Field(description="the version the update was part of")
    weight: float = Field(description="the weight it was applied at, and subtracted at")

    @classmethod
    def of(cls, removed: RemovedUpdateView) -> RemovedUpdatePublic:
        return cls(**_fields(removed))


class RepairPublic(BaseModel):
    entry: int = Field(description="numbers the job's repairs and releases together")
    version: int = Field(description="the version the repaired model is at")
    at: datetime
    reason: str
    first_bad_version: int | None
    versions_lost: int = Field(description="versions that held a removed update")
    removed: list[RemovedUpdatePublic]
    quarantined: list[str] = Field(description="the client ids it quarantined")

    @classmethod
    def of(cls, repair: RepairView) -> RepairPublic:
        return cls(
            **{
                **_fields(repair),
                "at": timestamp_to_datetime(repair.at),
                "removed": [RemovedUpdatePublic.of(r) for r in repair.removed],
                "quarantined": list(repair.quarantined),
            }
        )


class QuarantinedPublic(BaseModel):
    client_id: str
    client_name: str | None
    since: datetime
    repair: int = Field(description="the repair that quarantined it")

    @classmethod
    def of(cls, client: QuarantineView) -> QuarantinedPublic:
        return cls(**{**_fields(client), "since": timestamp_to_datetime(client.since)})


class IntegrityStatusPublic(IntegrityPublic):
    """A job's integrity in its status: ``Job``'s, and the search, reports, repairs."""

    detail: str | None = Field(description="what the search is doing, or what stops it")
    good: int | None = Field(description="the search's newest version known good")
    bad: int | None = Field(description="the search's first version reported bad")
    reports: list[IntegrityReportPublic] = Field(description="the newest integrity reports")
    probes: list[ProbeRecordPublic] = Field(description="the newest probes, the current last")
    repairs: list[RepairPublic]
    quarantined: list[QuarantinedPublic]
    reports_total: int = Field(description="integrity reports kept")
    updates_removed: int

    @classmethod
    def of(cls, status: IntegrityStatus) -> IntegrityStatusPublic:  # type: ignore[override]
        return cls(
            **{
                **_fields(status),
                "probe": _probe_or_none(status.probe),
                "reports": [IntegrityReportPublic.of(r) for r in status.reports],
                "probes": [ProbeRecordPublic.of(p) for p in status.probes],
                "repairs": [RepairPublic.of(r) for r in status.repairs],
                "quarantined": [QuarantinedPublic.of(q) for q in status.quarantined],
            }
        )


class JobStatusPublic(JobPublic):
    published_version: int = Field(description="the version GET .../model serves")
    staleness_policy: dict[str, float | int | str]
    buffer_size: int
    updates_buffered: int
    updates_rejected: dict[str, int] = Field(description="by problem code, since start")
    duplicates: int
    receipts_kept: int = Field(
        description="answers to applied updates kept for retries (those within the staleness "
        "window, and each client's last 8)"
    )
    staleness_histogram: dict[int, int]
    mean_weight: float | None
    clients: dict[str, ClientStatus]
    bytes_in: int
    bytes_out: int
    slots_in_use: int
    max_training: int
    queued_updates: int
    metrics: list[VersionMetrics] = Field(description="clients' reports per model version")
    pooled_metrics: dict[str, PooledMetricPublic] = Field(
        description="each metric over clients' latest reports"
    )
    stop_rules: list[StopRulePublic]
    integrity: IntegrityStatusPublic = Field(
        description="the state and probe, and the reports, probes, repairs, quarantined clients"
    )
    rotations: RotationStatusPublic = Field(description="key rotations done, and refusals")
    server_policy: dict[str, Any] = Field(
        default_factory=dict,
        description="policy (async or rounds), weighting, schedule; with rounds the open "
        "round: the version it builds on, its clients, who is in and who trains",
    )

    @classmethod
    def of(cls, status: StatusView) -> JobStatusPublic:  # type: ignore[override]
        fields = _fields(status)
        del fields["job"]
        return cls(
            **{
                **_job_fields(status.job),
                **fields,
                "clients": {cid: ClientStatus.of(c) for cid, c in status.clients.items()},
                "metrics": [VersionMetrics.of(m) for m in status.metrics],
                "pooled_metrics": {
                    name: PooledMetricPublic.of(p) for name, p in status.pooled_metrics.items()
                },
                "stop_rules": [StopRulePublic.of(r) for r in status.stop_rules],
                "integrity": IntegrityStatusPublic.of(status.integrity),
                "rotations": RotationStatusPublic.of(status.rotations),
            }
        )


class FailedJobPublic(BaseModel):
    name: str
    error: str = Field(description="why its directory could not be opened at startup")

    @classmethod
    def of(cls, failed: FailedJob) -> FailedJobPublic:
        return cls(**_fields(failed))


class ServerStatusPublic(BaseModel):
    jobs: list[JobPublic]
    failed_jobs: list[FailedJobPublic] = Field(
        description="job directories left out at startup; each job's calls answer state_invalid"
    )

    @classmethod
    def of(cls, status: ServerStatusView) -> ServerStatusPublic:
        return cls(
            jobs=[JobPublic.of(j) for j in status.jobs],
            failed_jobs=[FailedJobPublic.of(f) for f in status.failed_jobs],
        )
