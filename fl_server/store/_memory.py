"""``MemoryStore``: the in-memory twin of ``FileStore``, for unit tests only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fl_server.store._base import Store
from fl_server.store._records import Checkpoint, ControlRecord, JobRecord, UpdateRecord

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """The in-memory twin of ``FileStore``, for unit tests: nothing survives the process."""

    def __init__(self) -> None:
        self._job: JobRecord | None = None
        self._layout: bytes | None = None
        self._control: ControlRecord | None = None
        self._checkpoint: Checkpoint | None = None
        self._updates: list[UpdateRecord] = []
        self._metrics: list[dict[str, Any]] = []

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
        self._updates = [r for r in self._updates if r.seq > checkpoint.seq]

    def append_updates(self, records: Sequence[UpdateRecord]) -> None:
        self._updates.extend(records)

    def read_updates(self, after_seq: int) -> Iterator[UpdateRecord]:
        return iter([r for r in self._updates if r.seq > after_seq])

    def load_metrics(self) -> list[dict[str, Any]]:
        return list(self._metrics)

    def append_metrics(self, report: Mapping[str, Any]) -> None:
        self._metrics.append(dict(report))
