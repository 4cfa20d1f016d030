"""JSON request and response bodies of the REST API (ciphertexts travel as octet-stream)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, StrictFloat, StrictInt

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


class JobState(StrEnum):
    WAITING = "waiting_for_initial_model"
    TRAINING = "training"
    DONE = "done"


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class JobPublic(BaseModel):
    state: JobState
    version: int
    target_updates: int
    layout_fingerprint: str | None
    key_epoch: int
    profile: str


class LayoutAccepted(BaseModel):
    fingerprint: str


class InitialModelAccepted(BaseModel):
    version: int
    state: JobState


class UpdateAccepted(BaseModel):
    update_id: str
    version: int = Field(description="the model version that holds (or, buffered, will hold) it")
    staleness: int
    weight: float = Field(description="the staleness weight applied, after quantization")
    duplicate: bool


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


class VersionMetrics(BaseModel):
    version: int
    reports: int
    n_samples: int
    mean: dict[str, float] = Field(description="per metric, weighted by n_samples when given")


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
