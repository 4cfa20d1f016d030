"""``MemoryStore``: the in-memory twin of ``FileStore``, for unit tests only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fl_server.store._base import Store
from fl_server.store._records import Checkpoint, ControlRecord, JobRecord, LogRecord, UpdateRecord

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """The in-memory twin of ``FileStore``, for unit tests: nothing survives the process."""

    def __init__(self) -> None:
        self._job: JobRecord | None = None
        self._layout: bytes | None = None
        self._control: ControlRecord | None = None
        self._checkpoint: Checkpoint | None = None
        self._log: list[LogRecord] = []
        self._metrics: list[dict[str, Any]] = []
        self._integrity: list[dict[str, Any]] = []

    def load_job(self) -> JobRecord | None:
        return self._job

    def save_job(self, job: JobRecord) -> None:
        self._job = job

    def load_layout(self) -> bytes | None:
        return self._layout

    def save_layout(self, layout_json: bytes) -> None:
        self._layout = layout_json

    def load_control(self) -> ControlRecord | None:
        return self._control

    def save_control(self, control: ControlRecord) -> None:
        self._control = control

    def load_checkpoint(self) -> Checkpoint | None:
        return self._checkpoint

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._checkpoint = checkpoint
        kept_after = checkpoint.log_kept_after
        self._log = [r for r in self._log if r.seq > kept_after]

    def commit_rotation(self, job: JobRecord, checkpoint: Checkpoint) -> None:
        self._job = job
        self.write_checkpoint(checkpoint)

    def append_updates(self, records: Sequence[LogRecord]) -> None:
        # what a file log would read back: the envelope itself, not the spool it came from
        self._log.extend(r.with_envelope() if isinstance(r, UpdateRecord) else r for r in records)

    def read_log(self) -> Iterator[LogRecord]:
        return iter(list(self._log))

    def load_metrics(self) -> list[dict[str, Any]]:
        return list(self._metrics)

    def append_metrics(self, report: Mapping[str, Any]) -> None:
        self._metrics.append(dict(report))

    def load_integrity(self) -> list[dict[str, Any]]:
        return list(self._integrity)

    def append_integrity(self, report: Mapping[str, Any]) -> None:
        self._integrity.append(dict(report))
