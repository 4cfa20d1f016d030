"""The records the server stores: the job, one accepted update, a model checkpoint."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fl_server.errors import StateError

__all__ = ["Checkpoint", "JobRecord", "UpdateRecord"]

_JOB_FORMAT = 1


@dataclass(frozen=True)
class JobRecord:
    """The training job: what every stored ciphertext belongs to."""

    job_id: str
    key_epoch: int
    profile: str
    layout_json: bytes
    created_at: float

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": _JOB_FORMAT,
                "job_id": self.job_id,
                "key_epoch": self.key_epoch,
                "profile": self.profile,
                "layout": json.loads(self.layout_json),
                "created_at": self.created_at,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JobRecord:
        try:
            raw = json.loads(data)
            if raw["format"] != _JOB_FORMAT:
                raise ValueError(f"unsupported job format {raw['format']!r}")
            layout = json.dumps(raw["layout"], sort_keys=True, separators=(",", ":")).encode()
            return cls(
                job_id=str(raw["job_id"]),
                key_epoch=int(raw["key_epoch"]),
                profile=str(raw["profile"]),
                layout_json=layout,
                created_at=float(raw["created_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"job.json is unreadable: {exc!r}") from exc


@dataclass(frozen=True)
class UpdateRecord:
    """One accepted update as logged before it is acknowledged.

    ``weight`` is the applied (quantized) staleness weight and ``version`` the model version
    the update is part of; ``flush`` says whether applying it completes that version (always
    without a buffer; every ``buffer_size``-th update with one).
    """

    seq: int
    update_id: uuid.UUID
    client_id: str
    base_version: int
    staleness: int
    weight: float
    version: int
    flush: bool
    received_at: float
    digest: bytes = field(repr=False)
    envelope: bytes = field(repr=False)
    client_name: str | None = None  # from the access token; logs before it have none

    def header(self) -> dict[str, Any]:
        return {
            "client_name": self.client_name,
            "seq": self.seq,
            "update_id": str(self.update_id),
            "client_id": self.client_id,
            "base_version": self.base_version,
            "staleness": self.staleness,
            "weight": self.weight,
            "version": self.version,
            "flush": self.flush,
            "received_at": self.received_at,
            "sha256": self.digest.hex(),
        }

    @classmethod
    def from_header(cls, header: Mapping[str, Any], envelope: bytes) -> UpdateRecord:
        return cls(
            seq=int(header["seq"]),
            update_id=uuid.UUID(header["update_id"]),
            client_id=str(header["client_id"]),
            base_version=int(header["base_version"]),
            staleness=int(header["staleness"]),
            weight=float(header["weight"]),
            version=int(header["version"]),
            flush=bool(header["flush"]),
            received_at=float(header["received_at"]),
            digest=bytes.fromhex(header["sha256"]),
            envelope=envelope,
            client_name=None if header.get("client_name") is None else str(header["client_name"]),
        )


@dataclass(frozen=True)
class Checkpoint:
    """The model at ``version`` with every update up to ``seq`` in it and none buffered.

    ``blocks`` are the serialized model blocks; ``state`` is the bookkeeping that goes with
    them (block versions, the update ledger, counters), opaque to the store.
    """

    version: int
    seq: int
    blocks: tuple[bytes, ...] = field(repr=False)
    state: Mapping[str, Any] = field(repr=False)
