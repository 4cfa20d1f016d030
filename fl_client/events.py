"""What a client reports while it works: typed events, and the sink that renders them."""

# Events carry numbers and identifiers only; never a token, secret or key. Each has the
# name the CLI prints ("[update] ..." or {"event": "update", ...}); its fields, in order,
# are what follows.

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from fl_client.errors import describe_blocks

if TYPE_CHECKING:
    from fl_client.training import EvalResult

__all__ = [
    "ClientWarning",
    "Enrolled",
    "Event",
    "EventSink",
    "InitialModelPut",
    "IntegrityFailed",
    "IntegrityRestored",
    "JobJoined",
    "KeyEpochFetched",
    "ModelReencrypted",
    "Paused",
    "ProbeAnswered",
    "ProgressBar",
    "Rejected",
    "Resent",
    "Resumed",
    "RotationWaiting",
    "RoundResult",
    "Stopped",
    "WaitingForSlot",
]


@dataclass(frozen=True)
class Event:
    """Something that happened; ``name`` is how the CLI calls it."""

    name: ClassVar[str] = "event"

    def fields(self) -> dict[str, Any]:
        """The event's payload, in the order the CLI prints it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def text(self) -> str | None:
        """A sentence the CLI prints instead of the fields (human output), if any."""
        return None


class ProgressBar(Protocol):
    def update(self, n: float = 1) -> object: ...

    def set_total(self, total: float) -> None: ...


class EventSink(Protocol):
    """Where a client's events and progress go (``fl_client.output.Reporter`` renders them)."""

    def emit(self, event: Event) -> None: ...

    def bar(
        self, total: float | None, desc: str, unit: str = "it", *, unit_scale: bool = False
    ) -> AbstractContextManager[ProgressBar]:
        """Progress of one stage (pull, decrypt, train, encrypt, push)."""
        ...


@dataclass(frozen=True)
class Enrolled(Event):
    name: ClassVar[str] = "enrolled"
    client_id: str
    client_name: str
    key_epoch: int
    profile: str
    state_dir: str


@dataclass(frozen=True)
class KeyEpochFetched(Event):
    """The secret context of a key epoch this client did not hold yet was fetched."""

    name: ClassVar[str] = "key_epoch"
    key_epoch: int
    profile: str


@dataclass(frozen=True)
class InitialModelPut(Event):
    """This client started the job with its seeded initial model."""

    name: ClassVar[str] = "initial_model"
    bytes: int
    blocks: int
    shared_params: int
    seed: int


@dataclass(frozen=True)
class JobJoined(Event):
    """The job and its spec were checked, and this hospital's data against them."""

    name: ClassVar[str] = "job"
    job: str
    spec_sha256: str
    task: str
    model: str
    train_rows: int
    test_rows: int
    state: str
    version: int


@dataclass(frozen=True)
class Paused(Event):
    """The job is paused: the client waits (a journaled update is kept) until it resumes."""

    name: ClassVar[str] = "paused"
    job: str
    version: int


@dataclass(frozen=True)
class Resumed(Event):
    """The job is no longer paused."""

    name: ClassVar[str] = "resumed"
    job: str
    state: str


@dataclass(frozen=True)
class IntegrityFailed(Event):
    """A decrypted model failed an integrity check: reported, nothing trained on it."""

    name: ClassVar[str] = "integrity"
    job: str
    version: int
    check: str
    blocks: list[int]
    max_abs: float | None
    reported: bool = True

    def text(self) -> str:
        largest = f"; largest |value| {self.max_abs:.3g}" if self.max_abs is not None else ""
        told = "reported to the server" if self.reported else "NOT reported (see the warning)"
        return (
            f"model version {self.version} of job {self.job} failed the {self.check} check "
            f"in {describe_blocks(self.blocks)}{largest}: "
            f"{told}; nothing is trained on it"
        )


@dataclass(frozen=True)
class ProbeAnswered(Event):
    """A version the server probes (or a good version plus this hospital's own update,
    ``update_id``) was checked and the result reported."""

    name: ClassVar[str] = "probe"
    version: int
    update_id: str | None
    ok: bool
    check: str | None


@dataclass(frozen=True)
class IntegrityRestored(Event):
    """The job is healthy again past the version that failed: training goes on."""

    name: ClassVar[str] = "repaired"
    job: str
    failed_version: int
    version: int


@dataclass(frozen=True)
class RotationWaiting(Event):
    """The job moves to a new key epoch and another hospital re-encrypts the model: this
    one waits, then fetches the new epoch's secret context and trains on."""

    name: ClassVar[str] = "rotation_wait"
    job: str
    key_epoch: int
    version: int


@dataclass(frozen=True)
class ModelReencrypted(Event):
    """Asked by the server, this hospital re-encrypted the model under the new key epoch
    (after checking it decrypted under the old one); ``swapped``: the server took it."""

    name: ClassVar[str] = "reencrypted"
    job: str
    from_epoch: int
    key_epoch: int
    version: int
    swapped: bool


@dataclass(frozen=True)
class WaitingForSlot(Event):
    name: ClassVar[str] = "waiting_for_slot"
    retry_after: float


@dataclass(frozen=True)
class Resent(Event):
    """A journaled update left by a crash is sent again with its original id."""

    name: ClassVar[str] = "resend"
    update_id: str
    base_version: int


@dataclass(frozen=True)
class Rejected(Event):
    """The server refused an update that a retrained one may replace; nothing committed."""

    name: ClassVar[str] = "rejected"
    update_id: str
    code: str
    current_version: Any  # as the server's problem said, if it did


@dataclass(frozen=True)
class RoundResult(Event):
    """One acknowledged update and what it cost (the ``update`` event)."""

    name: ClassVar[str] = "update"
    round: int
    update_id: str
    base_version: int
    version: int
    staleness: int
    weight: float
    duplicate: bool
    wire: dict[str, float | int]
    pull_bytes: int
    pull_blocks: int
    train_steps: int
    train_loss: float
    eval_before: EvalResult | None

    def fields(self) -> dict[str, Any]:
        """Flat: the wire report's figures and the pulled model's metrics inline."""
        out: dict[str, Any] = {
            "round": self.round,
            "update_id": self.update_id,
            "base_version": self.base_version,
            "version": self.version,
            "staleness": self.staleness,
            "weight": self.weight,
            "duplicate": self.duplicate,
            "pull_bytes": self.pull_bytes,
            "pull_blocks": self.pull_blocks,
            "train_steps": self.train_steps,
            "train_loss": self.train_loss,
            **self.wire,
        }
        if self.eval_before is not None:
            # the pulled model's metrics on this hospital's held-out rows
            out.update(self.eval_before.metrics)
        return out


@dataclass(frozen=True)
class Stopped(Event):
    """The run ended; when the job was done, why, and the final model's metrics on this
    hospital's held-out rows."""

    name: ClassVar[str] = "stopped"
    reason: str
    rounds: int
    job_stop_reason: str | None = None
    final_version: int | None = None
    final_metrics: dict[str, float | int] | None = None

    def fields(self) -> dict[str, Any]:
        out = super().fields()
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class ClientWarning(Event):
    """A problem that did not stop the client."""

    name: ClassVar[str] = "warning"
    message: str
