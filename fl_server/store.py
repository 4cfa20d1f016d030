"""Durable server state behind a small interface: the job, a write-ahead update log, checkpoints.

``FileStore`` layout in ``state_dir``::

    lock                 flock: one server per directory
    job.json             the job: id, key epoch, profile, layout (written once, atomically)
    checkpoint.bin       the model at some version, all blocks (replaced atomically)
    wal/<seq>.log        accepted update envelopes after the checkpoint, in order
    metrics.jsonl        clients' evaluation reports

A log record is ``magic "HWAL" | header length u32 | payload length u64 | header crc32 u32 |
header JSON | payload``; the header carries the payload's SHA-256. Only the tail of the
last segment may be torn (a crash inside ``append_updates``, before it returned): it is cut
off at the next start. Anything else that fails its checksum is refused as corruption.
"""

from __future__ import annotations

import abc
import fcntl
import hashlib
import json
import logging
import os
import secrets
import stat
import struct
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fl_server.errors import StateError

__all__ = [
    "Checkpoint",
    "FileStore",
    "JobRecord",
    "MemoryStore",
    "Store",
    "UpdateRecord",
    "read_job_file",
]

logger = logging.getLogger("fl_server.store")

_JOB_FORMAT = 1
_WAL_MAGIC = b"HWAL"
_WAL_HEAD = struct.Struct("<4sIQI")  # magic, header length, payload length, header crc32
_MAX_WAL_HEADER = 64 * 1024
_CKPT_MAGIC = b"HCKP"
_CKPT_FORMAT = 1
_CKPT_HEAD = struct.Struct("<4sIQQ32s")  # magic, format, meta length, body length, sha256


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


class Store(abc.ABC):
    """Where the server's durable state lives. Every write is durable when it returns."""

    @abc.abstractmethod
    def load_job(self) -> JobRecord | None: ...

    @abc.abstractmethod
    def save_job(self, job: JobRecord) -> None: ...

    @abc.abstractmethod
    def load_checkpoint(self) -> Checkpoint | None: ...

    @abc.abstractmethod
    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint atomically and forget the log up to ``checkpoint.seq``."""

    @abc.abstractmethod
    def append_updates(self, records: Sequence[UpdateRecord]) -> None:
        """Append records (consecutive ``seq``) to the log; durable when this returns."""

    @abc.abstractmethod
    def read_updates(self, after_seq: int) -> Iterator[UpdateRecord]:
        """The logged records with ``seq > after_seq``, in order."""

    @abc.abstractmethod
    def load_metrics(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def append_metrics(self, report: Mapping[str, Any]) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the store."""


class MemoryStore(Store):
    """The in-memory twin of ``FileStore``, for unit tests: nothing survives the process."""

    def __init__(self) -> None:
        self._job: JobRecord | None = None
        self._checkpoint: Checkpoint | None = None
        self._updates: list[UpdateRecord] = []
        self._metrics: list[dict[str, Any]] = []

    def load_job(self) -> JobRecord | None:
        return self._job

    def save_job(self, job: JobRecord) -> None:
        self._job = job

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_private(path: Path, flags: int) -> BinaryIO:
    """Open for writing with mode 0600 whatever the umask: metrics are the hospitals' own."""
    fd = os.open(path, flags | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "ab" if flags & os.O_APPEND else "wb")


def _write_atomic(path: Path, parts: Sequence[bytes]) -> None:
    """Write ``parts`` to ``path`` so that a crash leaves the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with _open_private(tmp, os.O_CREAT | os.O_EXCL) as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)


def read_job_file(state_dir: Path) -> JobRecord | None:
    """The job stored in ``state_dir``, without opening (or creating) the store."""
    try:
        data = (state_dir / "job.json").read_bytes()
    except FileNotFoundError:
        return None
    return JobRecord.from_json(data)


class _TornRecordError(Exception):
    """A log record that is incomplete or fails its checksum."""


def _read_record(f: BinaryIO) -> UpdateRecord | None:
    """The next record, ``None`` at a clean end of file; ``_TornRecordError`` otherwise."""
    head = f.read(_WAL_HEAD.size)
    if not head:
        return None
    if len(head) < _WAL_HEAD.size:
        raise _TornRecordError("record prefix cut short")
    magic, header_len, payload_len, header_crc = _WAL_HEAD.unpack(head)
    if magic != _WAL_MAGIC or header_len > _MAX_WAL_HEADER:
        raise _TornRecordError("bad record prefix")
    header_bytes = f.read(header_len)
    if len(header_bytes) < header_len or zlib.crc32(header_bytes) != header_crc:
        raise _TornRecordError("record header cut short or damaged")
    payload = f.read(payload_len)
    if len(payload) < payload_len:
        raise _TornRecordError("record payload cut short")
    try:
        record = UpdateRecord.from_header(json.loads(header_bytes), payload)
    except (ValueError, KeyError, TypeError) as exc:
        raise _TornRecordError(f"record header unreadable: {exc!r}") from exc
    if hashlib.sha256(payload).digest() != record.digest:
        raise _TornRecordError("record payload fails its SHA-256")
    return record


def _has_valid_record_after(data: bytes) -> bool:
    """Whether a complete record header appears anywhere in ``data`` (so it is not a torn tail)."""
    start = data.find(_WAL_MAGIC)
    while start != -1:
        head = data[start : start + _WAL_HEAD.size]
        if len(head) == _WAL_HEAD.size:
            _, header_len, _, header_crc = _WAL_HEAD.unpack(head)
            header = data[start + _WAL_HEAD.size : start + _WAL_HEAD.size + header_len]
            complete = header_len <= _MAX_WAL_HEADER and len(header) == header_len
            if complete and zlib.crc32(header) == header_crc:
                return True
        start = data.find(_WAL_MAGIC, start + 1)
    return False


class FileStore(Store):
    """State in files under ``state_dir`` (see the module docstring), fsync'd and renamed.

    Parameters
    ----------
    state_dir
        Created (mode 0700) if missing. Locked for the lifetime of the store.
    max_metrics_reports
        The metrics file is compacted to the newest this many reports when it doubles.

    Raises
    ------
    StateError
        Another process holds the directory, or its contents are damaged.
    """

    def __init__(self, state_dir: Path, *, max_metrics_reports: int = 10_000) -> None:
        self.state_dir = state_dir
        self._wal_dir = state_dir / "wal"
        self._max_metrics = max_metrics_reports
        _make_private_dir(state_dir)
        _make_private_dir(self._wal_dir)
        self._lock_fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StateError(
                f"{state_dir} is in use by another fl_server process (one server per state "
                "directory; uvicorn --workers must be 1)"
            ) from None
        self._segment: BinaryIO | None = None
        self._segment_path: Path | None = None
        self._last_seq: int | None = None
        self._metrics_count: int | None = None

    # -- job ---------------------------------------------------------------------------

    def load_job(self) -> JobRecord | None:
        return read_job_file(self.state_dir)

    def save_job(self, job: JobRecord) -> None:
        _write_atomic(self.state_dir / "job.json", [job.to_json()])

    # -- checkpoint --------------------------------------------------------------------

    def load_checkpoint(self) -> Checkpoint | None:
        path = self.state_dir / "checkpoint.bin"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) < _CKPT_HEAD.size:
            raise StateError(f"{path} is cut short")
        magic, fmt, meta_len, body_len, digest = _CKPT_HEAD.unpack_from(data)
        if magic != _CKPT_MAGIC or fmt != _CKPT_FORMAT:
            raise StateError(f"{path} is not a checkpoint of this format")
        rest = memoryview(data)[_CKPT_HEAD.size :]
        if len(rest) != meta_len + body_len or hashlib.sha256(rest).digest() != digest:
            raise StateError(f"{path} fails its SHA-256: the checkpoint is damaged")
        try:
            meta = json.loads(bytes(rest[:meta_len]))
            sizes = [int(s) for s in meta["block_sizes"]]
            version, seq, state = int(meta["version"]), int(meta["seq"]), meta["state"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{path} has unreadable metadata: {exc!r}") from exc
        if sum(sizes) != body_len:
            raise StateError(f"{path}: block sizes do not add up to the body")
        blocks, offset = [], meta_len
        for size in sizes:
            blocks.append(bytes(rest[offset : offset + size]))
            offset += size
        return Checkpoint(version=version, seq=seq, blocks=tuple(blocks), state=state)

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        meta = json.dumps(
            {
                "version": checkpoint.version,
                "seq": checkpoint.seq,
                "block_sizes": [len(b) for b in checkpoint.blocks],
                "state": checkpoint.state,
            }
        ).encode()
        hasher = hashlib.sha256(meta)
        for block in checkpoint.blocks:
            hasher.update(block)
        body_len = sum(len(b) for b in checkpoint.blocks)
        head = _CKPT_HEAD.pack(_CKPT_MAGIC, _CKPT_FORMAT, len(meta), body_len, hasher.digest())
        _write_atomic(self.state_dir / "checkpoint.bin", [head, meta, *checkpoint.blocks])
        self._drop_segments_through(checkpoint.seq)

    # -- write-ahead log ---------------------------------------------------------------

    def _segments(self) -> list[tuple[int, Path]]:
        out = []
        for path in self._wal_dir.glob("*.log"):
            try:
                out.append((int(path.stem), path))
            except ValueError:
                raise StateError(f"unexpected file in the log directory: {path.name}") from None
        return sorted(out)

    def _drop_segments_through(self, seq: int) -> None:
        """Delete the segments holding only records with ``seq`` or less."""
        if self._segment is not None and self._last_seq is not None and self._last_seq <= seq:
            self._segment.close()
            self._segment = self._segment_path = None
        open_path = self._segment_path
        segments = self._segments()
        for i, (_, path) in enumerate(segments):
            # A segment ends where the next begins; the newest ends at the last record seen.
            last = segments[i + 1][0] - 1 if i + 1 < len(segments) else self._last_seq
            if path != open_path and last is not None and last <= seq:
                path.unlink()
        _fsync_dir(self._wal_dir)

    def append_updates(self, records: Sequence[UpdateRecord]) -> None:
        if not records:
            return
        if self._segment is None:
            path = self._wal_dir / f"{records[0].seq:020d}.log"
            self._segment = _open_private(path, os.O_CREAT | os.O_APPEND)
            self._segment_path = path
            _fsync_dir(self._wal_dir)
        f = self._segment
        for record in records:
            header = json.dumps(record.header()).encode()
            f.write(
                _WAL_HEAD.pack(_WAL_MAGIC, len(header), len(record.envelope), zlib.crc32(header))
            )
            f.write(header)
            f.write(record.envelope)
        f.flush()
        os.fsync(f.fileno())
        self._last_seq = records[-1].seq

    def read_updates(self, after_seq: int) -> Iterator[UpdateRecord]:
        segments = self._segments()
        for i, (_, path) in enumerate(segments):
            last_segment = i == len(segments) - 1
            with open(path, "rb") as f:
                while True:
                    offset = f.tell()
                    try:
                        record = _read_record(f)
                    except _TornRecordError as exc:
                        self._cut_torn_tail(path, offset, str(exc), last_segment)
                        break
                    if record is None:
                        break
                    self._last_seq = record.seq
                    if record.seq > after_seq:
                        yield record

    def _cut_torn_tail(self, path: Path, offset: int, reason: str, last_segment: bool) -> None:
        with open(path, "rb") as f:
            f.seek(offset)
            rest = f.read()
        if not last_segment or _has_valid_record_after(rest[1:]):
            raise StateError(
                f"{path.name} is damaged at byte {offset} ({reason}) with records after it: "
                "refusing to drop acknowledged updates"
            )
        logger.warning(
            "cutting a torn record (%d bytes, %s) off the end of %s: it was never acknowledged",
            len(rest),
            reason,
            path.name,
        )
        with open(path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())

    # -- metrics -----------------------------------------------------------------------

    def load_metrics(self) -> list[dict[str, Any]]:
        path = self.state_dir / "metrics.jsonl"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        if data and not data.endswith(b"\n"):
            # A report torn by a crash before it was answered: cut it so appends start clean.
            data = data[: data.rfind(b"\n") + 1]
            with open(path, "r+b") as f:
                f.truncate(len(data))
                os.fsync(f.fileno())
        reports: list[dict[str, Any]] = []
        for line in data.splitlines():
            try:
                report = json.loads(line)
            except ValueError:
                raise StateError(f"{path} holds a line that is not JSON") from None
            if isinstance(report, dict):
                reports.append(report)
        self._metrics_count = len(reports)
        return reports[-self._max_metrics :]

    def append_metrics(self, report: Mapping[str, Any]) -> None:
        path = self.state_dir / "metrics.jsonl"
        if self._metrics_count is None:
            self.load_metrics()
        assert self._metrics_count is not None
        line = json.dumps(dict(report), separators=(",", ":")).encode() + b"\n"
        if self._metrics_count + 1 > 2 * self._max_metrics:
            # Compact to the newest reports, as the service keeps them in memory.
            reports = self.load_metrics()
            kept = reports[max(0, len(reports) - self._max_metrics + 1) :]
            lines = [json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in kept]
            _write_atomic(path, [*lines, line])
            self._metrics_count = len(kept) + 1
            return
        with _open_private(path, os.O_CREAT | os.O_APPEND) as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._metrics_count += 1

    def close(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = self._segment_path = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1
