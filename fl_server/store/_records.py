"""The records a job stores: the job, its control state, one accepted update, a checkpoint."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fl_server.errors import StateError

__all__ = ["Checkpoint", "ControlRecord", "JobRecord", "UpdateRecord"]

# 2: jobs created from study specs. 3: the key id of the job's epoch (``key_id``); a
# format-2 job reads with none and records the key id keyauth states on its first open.
_JOB_FORMAT = 3
_JOB_FORMATS = (2, 3)
_CONTROL_FORMAT = 1
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class JobRecord:
    """A job as created: its name, its study spec and the keys every ciphertext uses.

    ``spec_json`` is the spec's canonical JSON (``hefl_study.spec_to_json``), kept as the
    exact text its ``spec_sha256`` names; ``job_id`` is unique per creation, so a job
    created again under the same name never matches another's cached model (ETag).
    ``key_id`` is the key id of ``key_epoch`` (hex SHA-256 of its secret context) when
    the job was created; ``None`` for a job from before key ids (format 2) until it is
    opened, and for a job created on key material that states none (tests).
    """

    job_id: str
    name: str
    spec_json: str = field(repr=False)
    spec_sha256: str
    key_epoch: int
    profile: str
    created_at: float
    key_id: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": _JOB_FORMAT,
                "job_id": self.job_id,
                "name": self.name,
                "spec": self.spec_json,
                "spec_sha256": self.spec_sha256,
                "key_epoch": self.key_epoch,
                "key_id": self.key_id,
                "profile": self.profile,
                "created_at": self.created_at,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JobRecord:
        try:
            raw = json.loads(data)
            if raw["format"] not in _JOB_FORMATS:
                raise ValueError(f"unsupported job format {raw['format']!r}")
            key_id = raw["key_id"] if raw["format"] >= 3 else None
            if key_id is not None and not (isinstance(key_id, str) and _KEY_ID.match(key_id)):
                raise ValueError(f"key_id is not 64 hex digits: {key_id!r}")
            record = cls(
                job_id=str(raw["job_id"]),
                name=str(raw["name"]),
                spec_json=str(raw["spec"]),
                spec_sha256=str(raw["spec_sha256"]),
                key_epoch=int(raw["key_epoch"]),
                profile=str(raw["profile"]),
                created_at=float(raw["created_at"]),
                key_id=key_id,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"job.json is unreadable: {exc!r}") from exc
        if hashlib.sha256(record.spec_json.encode("utf-8")).hexdigest() != record.spec_sha256:
            raise StateError("job.json: the spec does not match its SHA-256")
        return record


@dataclass(frozen=True)
class ControlRecord:
    """What the administrator and the stop rules decided: paused, done and why, time spent.

    ``training_seconds`` is the time the job spent in ``training`` up to when the record
    was written (a crash loses at most the time since then).
    """

    paused: bool = False
    stop_reason: str | None = None
    training_seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": _CONTROL_FORMAT,
                "paused": self.paused,
                "stop_reason": self.stop_reason,
                "training_seconds": self.training_seconds,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ControlRecord:
        try:
            raw = json.loads(data)
            if raw["format"] != _CONTROL_FORMAT:
                raise ValueError(f"unsupported control format {raw['format']!r}")
            reason = raw["stop_reason"]
            seconds = float(raw["training_seconds"])
            if not (seconds >= 0 and isinstance(raw["paused"], bool)):
                raise ValueError("paused must be a bool and training_seconds >= 0")
            return cls(
                paused=raw["paused"],
                stop_reason=None if reason is None else str(reason),
                training_seconds=seconds,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"control.json is unreadable: {exc!r}") from exc


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
