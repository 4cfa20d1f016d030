"""JSON request and response bodies of the REST API (ciphertexts travel as octet-stream)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictFloat, StrictInt

from fl_server.domain import (
    ClientView,
    JobState,
    JobView,
    LayoutSet,
    StatusView,
    UpdateAck,
    VersionSummary,
)

__all__ = [
    "ClientStatus",
    "HealthPublic",
    "InitialModelAccepted",
    "JobPublic",
    "JobState",
    "LayoutAccepted",
    "MetricsAccepted",
    "MetricsReportCreate",
    "SlotLease",
    "StatusPublic",
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


class JobPublic(BaseModel):
    state: JobState
    version: int
    target_updates: int
    layout_fingerprint: str | None
    key_epoch: int
    profile: str

    @classmethod
    def of(cls, job: JobView) -> JobPublic:
        return cls(**_fields(job))


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


class MetricsReportCreate(BaseModel):
    version: int = Field(ge=0, description="the model version the metrics were computed on")
    metrics: dict[str, StrictInt | StrictFloat] = Field(
        description="plaintext evaluation metrics, e.g. loss, accuracy, n_samples"
    )


class MetricsAccepted(BaseModel):
    version: int


class ClientStatus(BaseModel):
    client_name: str | None
    updates_applied: int
    updates_rejected: int
    metrics_reports: int
    last_seen: datetime | None
    last_update_at: datetime | None

    @classmethod
    def of(cls, client: ClientView) -> ClientStatus:
        return cls(
            **{
                **_fields(client),
                "last_seen": _datetime_or_none(client.last_seen),
                "last_update_at": _datetime_or_none(client.last_update_at),
            }
        )


class VersionMetrics(BaseModel):
    version: int
    reports: int
    n_samples: int
    mean: dict[str, float] = Field(description="per metric, weighted by n_samples when given")

    @classmethod
    def of(cls, summary: VersionSummary) -> VersionMetrics:
        return cls(**_fields(summary))


class StatusPublic(BaseModel):
    state: JobState
    version: int = Field(description="the version of the model as applied")
    published_version: int = Field(description="the version GET /v1/model serves")
    target_updates: int
    key_epoch: int
    profile: str
    layout_fingerprint: str | None
    staleness_policy: dict[str, float | int | str]
    buffer_size: int
    updates_applied: int = Field(description="accepted, durable updates (buffered ones included)")
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
    metrics: list[VersionMetrics]

    @classmethod
    def of(cls, status: StatusView) -> StatusPublic:
        return cls(
            **{
                **_fields(status),
                "clients": {cid: ClientStatus.of(c) for cid, c in status.clients.items()},
                "metrics": [VersionMetrics.of(m) for m in status.metrics],
            }
        )
