"""The records a job stores: the job, its control state, its log records, a checkpoint.

The write-ahead log holds three kinds of record (``LogRecord``), told apart by the
header's ``kind`` (a log written before repairs existed has none: every record is an
update): an accepted update, a repair that removes updates from the model, and the
release of a quarantined client.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, overload

from fl_server.errors import StateError

__all__ = [
    "Checkpoint",
    "ControlRecord",
    "FileBlocks",
    "JobRecord",
    "LogRecord",
    "PayloadSource",
    "ReleaseRecord",
    "RemovedUpdate",
    "RepairRecord",
    "RotationEntry",
    "UpdateRecord",
    "log_record_from_header",
]

# 2: jobs created from study specs. 3: the key id of the job's epoch (``key_id``); a
# format-2 job reads with none and records the key id keyauth states on its first open.
# 4: the key rotations the job went through (``rotations``); older formats had none.
_JOB_FORMAT = 4
_JOB_FORMATS = (2, 3, 4)
_CONTROL_FORMAT = 1
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RotationEntry:
    """One key rotation of a running job: the model moved from ``from_epoch`` to
    ``to_epoch`` (key id ``key_id``), re-encrypted by ``client_id``, at version ``version``
    (the first of the new epoch), after the update ``seq``."""

    from_epoch: int
    to_epoch: int
    key_id: str | None
    version: int
    seq: int
    client_id: str
    started_at: float
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "from_epoch": self.from_epoch,
            "to_epoch": self.to_epoch,
            "key_id": self.key_id,
            "version": self.version,
            "seq": self.seq,
            "client_id": self.client_id,
            "started_at": self.started_at,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RotationEntry:
        key_id = raw["key_id"]
        return cls(
            from_epoch=int(raw["from_epoch"]),
            to_epoch=int(raw["to_epoch"]),
            key_id=None if key_id is None else str(key_id),
            version=int(raw["version"]),
            seq=int(raw["seq"]),
            client_id=str(raw["client_id"]),
            started_at=float(raw["started_at"]),
            at=float(raw["at"]),
        )


@dataclass(frozen=True)
class JobRecord:
    """A job as created: its name, its study spec and the keys every ciphertext uses.

    ``spec_json`` is the spec's canonical JSON (``hefl_study.spec_to_json``), kept as the
    exact text its ``spec_sha256`` names; ``job_id`` is unique per creation, so a job
    created again under the same name never matches another's cached model (ETag).
    ``key_id`` is the key id of ``key_epoch`` (hex SHA-256 of its secret context) when
    the job was created; ``None`` for a job from before key ids (format 2) until it is
    opened, and for a job created on key material that states none (tests).
    ``key_epoch`` and ``key_id`` are the current ones: a key rotation replaces them (and
    the record, atomically) and adds a ``rotations`` entry.
    """

    job_id: str
    name: str
    spec_json: str = field(repr=False)
    spec_sha256: str
    key_epoch: int
    profile: str
    created_at: float
    key_id: str | None = None
    rotations: tuple[RotationEntry, ...] = ()

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
                "rotations": [r.to_json() for r in self.rotations],
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
                rotations=tuple(
                    RotationEntry.from_json(r)
                    for r in (raw["rotations"] if raw["format"] >= 4 else [])
                ),
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


class PayloadSource(Protocol):
    """An update's envelope kept on disk while it is logged (``fl_server.spool``)."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class UpdateRecord:
    """One accepted update as logged before it is acknowledged.

    ``weight`` is the applied (quantized) weight and ``version`` the model version the
    update is part of; ``flush`` says whether applying it completes that version (always
    without a buffer; every ``buffer_size``-th update with one). ``samples`` is the
    training rows the client declared (``X-Hefl-Samples``; ``None``: none declared, or a
    log from before). A ``deferred`` update belongs to a round (``fl_server.rounds``): its
    ``weight`` is provisional, and its applied weight is computed from the round's
    ``samples`` when the round closes, the same way live and in recovery.
    ``noise_seed`` (hospital-level DP, ``fl_server.hospital_privacy``) draws the noise
    the server adds with the update, the same live, in recovery and in a probe's rebuild.

    A received update's envelope is in ``source`` (its spool file), streamed into the log
    piece by piece, and ``envelope`` is empty; a record read back from the log holds it.
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
    samples: int | None = None
    deferred: bool = False
    # Hospital-level DP: the seed of this update's noise. In the log only: never in a
    # receipt, the status or a log line (whoever knows it can take the noise out).
    noise_seed: int | None = field(default=None, repr=False)
    source: PayloadSource | None = field(default=None, repr=False, compare=False)

    def header(self) -> dict[str, Any]:
        return {
            **({"noise_seed": self.noise_seed} if self.noise_seed is not None else {}),
            "samples": self.samples,
            "deferred": self.deferred,
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
            samples=None if header.get("samples") is None else int(header["samples"]),
            deferred=bool(header.get("deferred", False)),
            noise_seed=None if header.get("noise_seed") is None else int(header["noise_seed"]),
        )

    @property
    def payload(self) -> bytes:
        """What follows the header in the log: the envelope as received."""
        return self.envelope if self.source is None else b"".join(self.source.chunks())

    @property
    def payload_size(self) -> int:
        return len(self.envelope) if self.source is None else self.source.size

    def payload_chunks(self) -> Iterator[bytes]:
        """The payload in pieces, never joined when it is in a spool file."""
        if self.source is None:
            yield self.envelope
        else:
            yield from self.source.chunks()

    def with_envelope(self) -> UpdateRecord:
        """The same record holding its envelope bytes (not a spool that will be closed)."""
        return self if self.source is None else replace(self, envelope=self.payload, source=None)

    def without_envelope(self) -> UpdateRecord:
        """The same record without its envelope bytes (what is kept in memory)."""
        return replace(self, envelope=b"", source=None)


@dataclass(frozen=True)
class RemovedUpdate:
    """One update a repair took out of the model, and what its receipt said.

    ``weight`` is the weight it was applied at (and is subtracted at); ``version`` the
    version it was part of.
    """

    update_id: uuid.UUID
    client_id: str
    client_name: str | None
    seq: int
    version: int
    staleness: int
    weight: float
    digest: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": str(self.update_id),
            "client_id": self.client_id,
            "client_name": self.client_name,
            "seq": self.seq,
            "version": self.version,
            "staleness": self.staleness,
            "weight": self.weight,
            "sha256": self.digest.hex(),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RemovedUpdate:
        name = raw.get("client_name")
        return cls(
            update_id=uuid.UUID(str(raw["update_id"])),
            client_id=str(raw["client_id"]),
            client_name=None if name is None else str(name),
            seq=int(raw["seq"]),
            version=int(raw["version"]),
            staleness=int(raw["staleness"]),
            weight=float(raw["weight"]),
            digest=bytes.fromhex(str(raw["sha256"])),
        )

    @classmethod
    def of(cls, record: UpdateRecord) -> RemovedUpdate:
        return cls(
            update_id=record.update_id,
            client_id=record.client_id,
            client_name=record.client_name,
            seq=record.seq,
            version=record.version,
            staleness=record.staleness,
            weight=record.weight,
            digest=record.digest,
        )


@dataclass(frozen=True)
class RepairRecord:
    """A repair: the updates it subtracts from the model, logged before it is applied.

    It follows the update ``after_seq`` in the log and is the job's integrity entry
    ``entry`` (repairs and releases are numbered together, so a checkpoint says which it
    holds). Self-contained: ``envelopes`` are the removed updates' envelopes as received,
    so a replay needs no older record. Applying it adds a partly filled buffer to the
    model first, then subtracts each removed update at its weight; the model is then at
    ``version``. ``quarantine`` maps each client it quarantines to its name.
    """

    entry: int
    after_seq: int
    version: int
    removed: tuple[RemovedUpdate, ...]
    quarantine: Mapping[str, str | None]
    reason: str
    at: float
    first_bad_version: int | None = None
    envelopes: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def seq(self) -> int:
        """Where it stands in the log: after the update of this ``seq``."""
        return self.after_seq

    @property
    def payload(self) -> bytes:
        return b"".join(self.envelopes)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.payload).digest()

    def header(self) -> dict[str, Any]:
        return {
            "kind": "repair",
            "entry": self.entry,
            "after_seq": self.after_seq,
            "version": self.version,
            "removed": [r.to_json() for r in self.removed],
            "quarantine": dict(self.quarantine),
            "reason": self.reason,
            "at": self.at,
            "first_bad_version": self.first_bad_version,
            "envelope_sizes": [len(e) for e in self.envelopes],
            "sha256": self.digest.hex(),
        }

    @classmethod
    def from_header(cls, header: Mapping[str, Any], payload: bytes) -> RepairRecord:
        sizes = [int(s) for s in header["envelope_sizes"]]
        if sum(sizes) != len(payload) or any(s < 0 for s in sizes):
            raise ValueError("the repair's envelope sizes do not add up to its payload")
        envelopes, offset = [], 0
        for size in sizes:
            envelopes.append(payload[offset : offset + size])
            offset += size
        first_bad = header.get("first_bad_version")
        return cls(
            entry=int(header["entry"]),
            after_seq=int(header["after_seq"]),
            version=int(header["version"]),
            removed=tuple(RemovedUpdate.from_json(r) for r in header["removed"]),
            quarantine={
                str(k): None if v is None else str(v) for k, v in header["quarantine"].items()
            },
            reason=str(header["reason"]),
            at=float(header["at"]),
            first_bad_version=None if first_bad is None else int(first_bad),
            envelopes=tuple(envelopes),
        )

    def without_envelopes(self) -> RepairRecord:
        return replace(self, envelopes=())


@dataclass(frozen=True)
class ReleaseRecord:
    """The administrator released ``client_id`` from quarantine (integrity entry ``entry``)."""

    entry: int
    after_seq: int
    client_id: str
    at: float

    @property
    def seq(self) -> int:
        return self.after_seq

    @property
    def payload(self) -> bytes:
        return b""

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(b"").digest()

    def header(self) -> dict[str, Any]:
        return {
            "kind": "release",
            "entry": self.entry,
            "after_seq": self.after_seq,
            "client_id": self.client_id,
            "at": self.at,
            "sha256": self.digest.hex(),
        }

    @classmethod
    def from_header(cls, header: Mapping[str, Any], payload: bytes) -> ReleaseRecord:
        if payload:
            raise ValueError("a release record has no payload")
        return cls(
            entry=int(header["entry"]),
            after_seq=int(header["after_seq"]),
            client_id=str(header["client_id"]),
            at=float(header["at"]),
        )


LogRecord = UpdateRecord | RepairRecord | ReleaseRecord
"""One record of the write-ahead log; ``seq`` orders it (a repair or release: the update
it follows)."""


def log_record_from_header(header: Mapping[str, Any], payload: bytes) -> LogRecord:
    """The record a log header and its payload hold (no ``kind``: an update)."""
    kind = header.get("kind", "update")
    if kind == "update":
        return UpdateRecord.from_header(header, payload)
    if kind == "repair":
        return RepairRecord.from_header(header, payload)
    if kind == "release":
        return ReleaseRecord.from_header(header, payload)
    raise ValueError(f"unknown log record kind {kind!r}")


class FileBlocks(Sequence[bytes]):
    """Serialized model blocks kept in files and read one at a time when asked, never held
    all at once (a checkpoint's, a published model's); a block's ``size`` is known without
    reading it."""

    @abstractmethod
    def read(self, index: int) -> bytes:
        """Block ``index``'s bytes (``0 <= index < len(self)``)."""

    @abstractmethod
    def size(self, index: int) -> int:
        """Block ``index``'s length."""

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self.read(i) for i in range(len(self))[index]]
        return self.read(range(len(self))[index])

    def __eq__(self, other: object) -> bool:
        """The same bytes as ``other``, a sequence of bytes (reads every block)."""
        if not isinstance(other, Sequence) or isinstance(other, (bytes, str)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Checkpoint:
    """The model at ``version`` with every update up to ``seq`` in it and none buffered.

    ``blocks`` are the serialized model blocks; ``state`` is the bookkeeping that goes with
    them (block versions, the update ledger, counters, repairs), opaque to the store.
    ``drop_through`` is the ``seq`` through which the log may be forgotten once the
    checkpoint is written (``None``: ``seq``); it trails ``seq`` so that the log keeps the
    updates a repair may still need (``FLSERVER_REPAIR_WINDOW``).
    """

    version: int
    seq: int
    blocks: Sequence[bytes] = field(repr=False)
    state: Mapping[str, Any] = field(repr=False)
    drop_through: int | None = None

    @property
    def log_kept_after(self) -> int:
        """The log keeps the records after this ``seq``."""
        return self.seq if self.drop_through is None else min(self.drop_through, self.seq)
