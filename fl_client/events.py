"""What a client reports while it works: typed events, and the sink that renders them."""

# Events carry numbers and identifiers only; never a token, secret or key. Each has the
# name the CLI prints ("[update] ..." or {"event": "update", ...}); its fields, in order,
# are what follows.

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from fl_client.training import EvalResult

__all__ = [
    "ClientWarning",
    "Enrolled",
    "Event",
    "EventSink",
    "InitialModelPut",
    "KeyEpochFetched",
    "ProgressBar",
    "Rejected",
    "Resent",
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

    def to_dict(self) -> dict[str, Any]:
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
            out["accuracy"] = self.eval_before.accuracy
            out["loss"] = self.eval_before.loss
        return out

    def fields(self) -> dict[str, Any]:
        return self.to_dict()


@dataclass(frozen=True)
class Stopped(Event):
    """The run ended; the final model's numbers when the job was done."""

    name: ClassVar[str] = "stopped"
    reason: str
    rounds: int
    final_version: int | None = None
    final_accuracy: float | None = None
    final_loss: float | None = None

    def fields(self) -> dict[str, Any]:
        out = super().fields()
        if self.final_version is None:
            for key in ("final_version", "final_accuracy", "final_loss"):
                del out[key]
        return out


@dataclass(frozen=True)
class ClientWarning(Event):
    """A problem that did not stop the client."""

    name: ClassVar[str] = "warning"
    message: str
