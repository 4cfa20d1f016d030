"""What the rounds need of fl_server and keyauth (ports), and the answers those give."""

# No httpx here: fl_client.transport implements these ports over HTTP, tests with in-memory
# fakes. A port reports a refusal with the typed errors of fl_client.errors.

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from fl_client.state import EnvelopeFile

__all__ = [
    "IntegrityReport",
    "JobInfo",
    "JobIntegrity",
    "LeasedModel",
    "ModelDownload",
    "OnChunk",
    "Probe",
    "Rotation",
    "SecretContext",
    "SecretContextSource",
    "ServerPort",
    "SlotLease",
    "UpdateAck",
    "metrics_report_json",
]

OnChunk = Callable[[int, int | None], object]
"""Called with each downloaded chunk's size and the total size, if known."""


def metrics_report_json(
    version: int, metrics: Mapping[str, float | int], privacy: Mapping[str, float] | None
) -> dict[str, object]:
    """The body of ``POST /v1/jobs/{job}/metrics``; ``privacy`` only when there is one."""
    body: dict[str, object] = {"version": version, "metrics": dict(metrics)}
    if privacy is not None:
        body["privacy"] = dict(privacy)
    return body


@dataclass(frozen=True)
class Probe:
    """A version the server asks the clients to check while it locates a bad update:
    rebuilt as it was, or (``update_id``, for its sender ``client_id`` only) a good
    version plus that one update."""

    version: int
    update_id: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class JobIntegrity:
    """The job's ``integrity``: ``healthy``, ``locating`` or ``repairing``, and the probe."""

    state: str = "healthy"
    probe: Probe | None = None


@dataclass(frozen=True)
class IntegrityReport:
    """What a client found in one model version (``POST /v1/jobs/{job}/integrity``).

    Which check failed and in which blocks, never a decrypted value: the largest magnitude
    the check saw stays with the hospital (a precise decryption of a ciphertext the server
    holds is what key-recovery attacks on CKKS need; docs/design.md).
    """

    version: int
    ok: bool
    check: str | None = None
    blocks: tuple[int, ...] = ()
    update_id: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "ok": self.ok,
            "check": self.check,
            "blocks": list(self.blocks),
            "update_id": self.update_id,
        }


@dataclass(frozen=True)
class Rotation:
    """A key rotation under way (``Job.rotation``): the job moves to ``key_epoch`` (key id
    ``key_id``); ``client_id`` is asked to re-encrypt ``version``, every other waits."""

    key_epoch: int
    version: int
    key_id: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class JobInfo:
    """A job as fl_server describes it (``Job`` in docs/protocol.md).

    ``key_id`` is the job's key id (``None`` from a server that does not say it: not
    checked); ``integrity`` is healthy from a server that does not say it; ``rotation``
    is the key rotation under way, if any.
    """

    name: str
    state: str
    version: int
    target_updates: int | None
    layout_fingerprint: bytes | None
    key_epoch: int
    profile: str
    spec_sha256: str
    description: str = ""
    stop_reason: str | None = None
    updates_applied: int = 0
    key_id: str | None = None
    integrity: JobIntegrity = field(default_factory=JobIntegrity)
    rotation: Rotation | None = None


@dataclass(frozen=True)
class ModelDownload:
    data: bytes = field(repr=False)
    version: int
    etag: str | None


@dataclass(frozen=True)
class SlotLease:
    expires_at: str


@dataclass(frozen=True)
class LeasedModel:
    """A training lease and the model, taken in one request (``POST …/leases``): the
    download, when the lease expires (ISO 8601), and the job's state and version now."""

    download: ModelDownload
    expires_at: str
    job_state: str
    job_version: int


@dataclass(frozen=True)
class UpdateAck:
    """The server's receipt of an update; ``leased``: the next round's lease and model,
    when the update asked for them and the server gave them (``?lease=next``)."""

    update_id: str
    version: int
    staleness: int
    weight: float
    duplicate: bool
    leased: LeasedModel | None = None


@dataclass(frozen=True)
class SecretContext:
    data: bytes = field(repr=False)
    key_epoch: int
    profile: str


SecretContextSource = Callable[[int], SecretContext]
"""Fetches the secret context of a key epoch from the key authority."""


class ServerPort(Protocol):
    """One job of fl_server (``/v1/jobs/{job}/...``) as a client's rounds see it."""

    def job(self) -> JobInfo: ...

    def spec(self) -> bytes:
        """The job's spec as the server stores it (canonical JSON), to check against its hash."""
        ...

    def put_layout(self, layout_json: bytes) -> bool:
        """Set the job's layout; ``True`` if this call created it, ``False`` if it was equal."""
        ...

    def get_layout(self) -> bytes: ...

    def put_initial_model(self, envelope: bytes) -> None: ...

    def get_model(
        self,
        *,
        since: int | None = None,
        etag: str | None = None,
        on_chunk: OnChunk | None = None,
    ) -> ModelDownload | None:
        """The model envelope (only blocks changed after ``since``), or ``None`` if unchanged."""
        ...

    def request_slot(self) -> SlotLease:
        """A training slot; a busy server raises ``RateLimitedError`` at once."""
        ...

    def release_slot(self) -> None: ...

    def lease_model(
        self, *, since: int | None = None, on_chunk: OnChunk | None = None
    ) -> LeasedModel:
        """A training slot and the model (only blocks changed after ``since``) in one
        request; a busy server raises ``RateLimitedError`` at once."""
        ...

    def push_update(
        self,
        envelope: bytes | EnvelopeFile,
        metrics: str | None = None,
        *,
        samples: int | None = None,
        lease_next: bool = False,
        since: int | None = None,
    ) -> UpdateAck:
        """Send an update (from its file, in pieces, when it is in one); ``metrics``, a
        report of the metrics endpoint's JSON, goes with it; ``samples``: the training
        rows behind it (the server weighs by them); ``lease_next``: ask for the next
        round's lease and model (the blocks changed after ``since``) with the answer."""
        ...

    def post_metrics(
        self,
        version: int,
        metrics: Mapping[str, float | int],
        privacy: Mapping[str, float] | None = None,
    ) -> None:
        """Report a version's metrics, and the ε spent (``{"epsilon", "delta", ...}``)."""
        ...

    def get_probe_model(
        self, version: int, update_id: str | None = None, *, on_chunk: OnChunk | None = None
    ) -> ModelDownload:
        """A probed version, whole (``GET …/model?version=V[&update=ID]``)."""
        ...

    def post_integrity(self, report: IntegrityReport) -> str:
        """Report a model version's checks; the job's integrity state after it."""
        ...

    def put_rotated_model(self, envelope: bytes) -> JobInfo:
        """The model re-encrypted under the new key epoch (``PUT …/rotation``); the job
        after the swap."""
        ...
