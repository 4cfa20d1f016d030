"""The rounds' ports without HTTP: ``MemoryPort`` onto a ``FakeServer``, ``RecordingSink``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fl_client.errors import error_from_problem
from fl_client.events import Event
from fl_client.output import Reporter
from fl_client.rounds.port import (
    IntegrityReport,
    JobInfo,
    LeasedModel,
    ModelDownload,
    OnChunk,
    SlotLease,
    UpdateAck,
    metrics_report_json,
)
from fl_client.state import EnvelopeFile
from fl_client.transport.server import job_from_json
from tests.fl_client.fakes import FakeServer, Refusal

T = TypeVar("T")


@dataclass
class MemoryPort:
    """The rounds' ``ServerPort`` onto a ``FakeServer``'s job: no HTTP, no tokens.

    ``calls`` names every call in order, ``since`` the ``since`` of every model pull;
    ``faults[name]`` lists errors the next calls of ``name`` raise instead of answering.
    """

    server: FakeServer
    calls: list[str] = field(default_factory=list)
    since: list[int | None] = field(default_factory=list)
    faults: dict[str, list[Exception]] = field(default_factory=dict)

    def _call(self, name: str, handler: Callable[..., T], *args: Any) -> T:
        self.calls.append(name)
        if self.faults.get(name):
            raise self.faults[name].pop(0)
        try:
            return handler(*args)
        except Refusal as refusal:
            body = {"code": refusal.code, "detail": refusal.code, **refusal.extra}
            raise error_from_problem(
                refusal.status, body, retry_after=refusal.retry_after
            ) from None

    def job(self) -> JobInfo:
        return job_from_json(self._call("job", self.server.job), "job")

    def spec(self) -> bytes:
        return self._call("spec", self.server.spec_bytes)

    def put_layout(self, layout_json: bytes) -> bool:
        return self._call("put_layout", self.server.put_layout, layout_json)

    def get_layout(self) -> bytes:
        return self._call("get_layout", self.server.get_layout)

    def put_initial_model(self, envelope: bytes) -> None:
        self._call("put_initial_model", self.server.put_initial_model, envelope)

    def get_model(
        self, *, since: int | None = None, etag: str | None = None, on_chunk: OnChunk | None = None
    ) -> ModelDownload | None:
        self.since.append(since)
        model = self._call("get_model", self.server.get_model, since, etag)
        if model is None:
            return None
        data, version, tag = model
        if on_chunk is not None:
            on_chunk(len(data), len(data))
        return ModelDownload(data=data, version=version, etag=tag)

    def request_slot(self) -> SlotLease:
        return SlotLease(expires_at=self._call("request_slot", self.server.request_slot))

    def release_slot(self) -> None:
        self._call("release_slot", lambda: None)

    def lease_model(
        self, *, since: int | None = None, on_chunk: OnChunk | None = None
    ) -> LeasedModel:
        self.since.append(since)
        data, version, tag = self._call("lease_model", self.server.lease_model, since)
        if on_chunk is not None:
            on_chunk(len(data), len(data))
        return LeasedModel(
            download=ModelDownload(data=data, version=version, etag=tag),
            expires_at="2030-01-01T00:00:00Z",
            job_state=self.server.state,
            job_version=self.server.version,
        )

    def push_update(
        self,
        envelope: bytes | EnvelopeFile,
        metrics: str | None = None,
        *,
        samples: int | None = None,
        lease_next: bool = False,
        since: int | None = None,
    ) -> UpdateAck:
        # the fake server answers as an older one: the plain receipt, never the next lease
        self.server.samples_declared.append(samples)
        # the real transport sends a file's bytes in pieces; the fake server reads them whole
        body = envelope if isinstance(envelope, bytes) else b"".join(envelope)
        return UpdateAck(**self._call("push_update", self.server.push_update, body, metrics))

    def post_metrics(
        self,
        version: int,
        metrics: Mapping[str, float | int],
        privacy: Mapping[str, float] | None = None,
    ) -> None:
        body = metrics_report_json(version, metrics, privacy)
        self._call("post_metrics", self.server.post_metrics, body)

    def get_probe_model(
        self, version: int, update_id: str | None = None, *, on_chunk: OnChunk | None = None
    ) -> ModelDownload:
        data, served = self._call(
            "get_probe_model", self.server.get_probe_model, version, update_id
        )
        return ModelDownload(data=data, version=served, etag=None)

    def post_integrity(self, report: IntegrityReport) -> str:
        return self._call("post_integrity", self.server.post_integrity, report.to_json())

    def put_rotated_model(self, envelope: bytes) -> JobInfo:
        return job_from_json(
            self._call("put_rotated_model", self.server.put_rotated_model, envelope), "job"
        )


class RecordingSink(Reporter):
    """A quiet ``Reporter`` (no bars, no lines) that keeps the events it is given."""

    def __init__(self) -> None:
        super().__init__("quiet")
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
        super().emit(event)

    @property
    def names(self) -> list[str]:
        return [event.name for event in self.events]
