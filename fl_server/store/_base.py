"""``Store``: the interface of one job's durable state, implemented by both stores."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fl_server.store._records import Checkpoint, ControlRecord, JobRecord, LogRecord, UpdateRecord

__all__ = ["Store"]


class Store(abc.ABC):
    """Where one job's durable state lives. Every write is durable when it returns."""

    @abc.abstractmethod
    def load_job(self) -> JobRecord | None: ...

    @abc.abstractmethod
    def save_job(self, job: JobRecord) -> None: ...

    @abc.abstractmethod
    def load_layout(self) -> bytes | None:
        """The model layout (``ModelLayout.to_json()``), ``None`` before one is set."""

    @abc.abstractmethod
    def save_layout(self, layout_json: bytes) -> None: ...

    @abc.abstractmethod
    def load_control(self) -> ControlRecord | None: ...

    @abc.abstractmethod
    def save_control(self, control: ControlRecord) -> None:
        """Replace the control record atomically."""

    @abc.abstractmethod
    def load_checkpoint(self) -> Checkpoint | None: ...

    @abc.abstractmethod
    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint atomically and forget the log up to
        ``checkpoint.log_kept_after``."""

    @abc.abstractmethod
    def commit_rotation(self, job: JobRecord, checkpoint: Checkpoint) -> None:
        """Move the job to a new key epoch: ``job`` (its new ``key_epoch``) and the model
        re-encrypted under it (``checkpoint``) take effect together or not at all, even
        across a crash; the log is then forgotten through ``checkpoint.seq``."""

    @abc.abstractmethod
    def append_updates(self, records: Sequence[LogRecord]) -> None:
        """Append records (in ``seq`` order) to the log; durable when this returns."""

    @abc.abstractmethod
    def read_log(self) -> Iterator[LogRecord]:
        """Every record the log keeps, in order: updates, repairs and releases."""

    def read_updates(self, after_seq: int) -> Iterator[UpdateRecord]:
        """The logged updates with ``seq > after_seq``, in order."""
        for record in self.read_log():
            if isinstance(record, UpdateRecord) and record.seq > after_seq:
                yield record

    @abc.abstractmethod
    def load_metrics(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def append_metrics(self, report: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    def load_integrity(self) -> list[dict[str, Any]]:
        """Clients' integrity reports (the newest kept), oldest first."""

    @abc.abstractmethod
    def append_integrity(self, report: Mapping[str, Any]) -> None:
        """Keep one integrity report; durable when this returns."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the store."""
