"""The write-ahead log: checksummed records in ``<seq>.log`` segments.

A record is ``magic "HWAL" | header length u32 | payload length u64 | header crc32 u32 |
header JSON | payload``; the header carries the payload's SHA-256 and its ``kind``
(``LogRecord``: an accepted update, whose payload is its envelope; a repair, whose
payload is the envelopes of the updates it removes; a release, with none). Only the
tail of the last segment may be torn (a crash inside ``append``, before it returned): it
is cut off when the log is read. Anything else that fails its checksum is refused as
corruption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import hefl_durable
from fl_server.errors import StateError
from fl_server.store._records import LogRecord, UpdateRecord, log_record_from_header

__all__ = ["WriteAheadLog"]

logger = logging.getLogger("fl_server.store")

_WAL_MAGIC = b"HWAL"
_WAL_HEAD = struct.Struct("<4sIQI")  # magic, header length, payload length, header crc32
_MAX_WAL_HEADER = 64 * 1024


class _TornRecordError(Exception):
    """A log record that is incomplete or fails its checksum."""


def _read_record(f: BinaryIO) -> LogRecord | None:
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
        record = log_record_from_header(json.loads(header_bytes), payload)
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


class WriteAheadLog:
    """The segments in ``directory``, each named after the ``seq`` of its first record.

    One segment is open for appending at a time; a new one starts after a restart and
    after a checkpoint has dropped the open one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segment: BinaryIO | None = None
        self._segment_path: Path | None = None
        self._last_seq: int | None = None

    def _segments(self) -> list[tuple[int, Path]]:
        out = []
        for path in self.directory.glob("*.log"):
            try:
                out.append((int(path.stem), path))
            except ValueError:
                raise StateError(f"unexpected file in the log directory: {path.name}") from None
        return sorted(out)

    def drop_through(self, seq: int) -> None:
        """Delete the segments holding only records with ``seq`` or less.

        The open segment is closed first, so the next record starts a new one: the log
        kept for repairs trails the checkpoint, and a segment that never closed would
        never be dropped.
        """
        self.close()
        segments = self._segments()
        for i, (_, path) in enumerate(segments):
            # A segment ends where the next begins; the newest ends at the last record seen.
            last = segments[i + 1][0] - 1 if i + 1 < len(segments) else self._last_seq
            if last is not None and last <= seq:
                path.unlink()
        hefl_durable.fsync_dir(self.directory)

    def append(self, records: Sequence[LogRecord]) -> None:
        """Append records (in ``seq`` order); durable when this returns."""
        if not records:
            return
        if self._segment is None:
            # A repair or release is named after the update it follows, plus one: the
            # segment of that name, if any, is the newest, and appending to it keeps order.
            first = records[0]
            start = first.seq if isinstance(first, UpdateRecord) else first.seq + 1
            path = self.directory / f"{start:020d}.log"
            self._segment = hefl_durable.open_append(path)
            self._segment_path = path
        f = self._segment
        for record in records:
            header = json.dumps(record.header()).encode()
            if isinstance(record, UpdateRecord):
                # an update's envelope is copied from its spool file piece by piece
                size, pieces = record.payload_size, record.payload_chunks()
            else:
                payload = record.payload
                size, pieces = len(payload), iter((payload,))
            f.write(_WAL_HEAD.pack(_WAL_MAGIC, len(header), size, zlib.crc32(header)))
            f.write(header)
            for piece in pieces:
                f.write(piece)
        f.flush()
        os.fsync(f.fileno())
        self._last_seq = max(self._last_seq or 0, records[-1].seq)

    def read(self, after_seq: int) -> Iterator[LogRecord]:
        """The records with ``seq > after_seq``, in order; a torn tail is cut off on the way.

        ``read(-1)`` is every record kept, repairs and releases included.
        """
        segments = self._segments()
        for i, (_, path) in enumerate(segments):
            last_segment = i == len(segments) - 1
            with open(path, "rb") as f:
                while True:
                    offset = f.tell()
                    try:
                        record = _read_record(f)
                    except _TornRecordError as exc:
                        _cut_torn_tail(path, offset, str(exc), last_segment)
                        break
                    if record is None:
                        break
                    self._last_seq = max(self._last_seq or 0, record.seq)
                    if record.seq > after_seq:
                        yield record

    def close(self) -> None:
        """Close the open segment; the next ``append`` starts a new one."""
        if self._segment is not None:
            self._segment.close()
            self._segment = self._segment_path = None


def _cut_torn_tail(path: Path, offset: int, reason: str, last_segment: bool) -> None:
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
    hefl_durable.truncate(path, offset)
