"""The plain values the service takes and answers with; routes convert them to and from schemas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from fl_server.receipts import UpdateReceipt

__all__ = [
    "BodyReader",
    "ClientView",
    "JobState",
    "JobView",
    "LayoutSet",
    "ModelDownload",
    "StatusView",
    "UpdateAck",
    "VersionSummary",
]

BodyReader = Callable[[int], Awaitable[bytes]]
"""Reads a request body, refused as soon as it is known to exceed the given number of bytes."""


class JobState(StrEnum):
    WAITING = "waiting_for_initial_model"
    TRAINING = "training"
    DONE = "done"


@dataclass(frozen=True)
class JobView:
    """The job as a client sees it."""

    state: JobState
    version: int
    target_updates: int
    layout_fingerprint: str | None
    key_epoch: int
    profile: str


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
class ClientView:
    """One client as the status shows it; times are seconds since the epoch."""

    client_name: str | None
    updates_applied: int
    updates_rejected: int
    metrics_reports: int
    last_seen: float | None
    last_update_at: float | None


@dataclass(frozen=True)
class VersionSummary:
    """The evaluation reports on one model version; ``mean`` weighted by ``n_samples``."""

    version: int
    reports: int
    n_samples: int
    mean: dict[str, float]


@dataclass(frozen=True)
class StatusView:
    """Everything the status page and the Prometheus metrics show."""

    state: JobState
    version: int
    published_version: int
    target_updates: int
    key_epoch: int
    profile: str
    layout_fingerprint: str | None
    staleness_policy: dict[str, float | int | str]
    buffer_size: int
    updates_applied: int
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
