"""What repairs did to a job: removed updates, quarantined clients; kept in checkpoints.

The log's repair and release records change it (``fl_server.state``), so a replay after
kill -9 gives back the same book; a checkpoint carries it whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fl_server.receipts import UpdateReceipt
from fl_server.store import ReleaseRecord, RemovedUpdate, RepairRecord

__all__ = ["QuarantinedClient", "RepairBook", "RepairSummary"]


@dataclass(frozen=True)
class QuarantinedClient:
    """A client whose updates the job refuses, since repair ``entry`` at ``since``."""

    client_id: str
    client_name: str | None
    since: float
    entry: int

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_name": self.client_name,
            "since": self.since,
            "entry": self.entry,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> QuarantinedClient:
        name = raw.get("client_name")
        return cls(
            client_id=str(raw["client_id"]),
            client_name=None if name is None else str(name),
            since=float(raw["since"]),
            entry=int(raw["entry"]),
        )


@dataclass(frozen=True)
class RepairSummary:
    """One repair as the status shows it: its record (without the envelopes), and
    ``versions_lost``, the versions the model held a removed update in before the repair
    (from the first of them to the version the repair found)."""

    record: RepairRecord
    versions_lost: int

    def to_json(self) -> dict[str, Any]:
        return {**self.record.header(), "versions_lost": self.versions_lost}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RepairSummary:
        return cls(RepairRecord.from_header(raw, b""), int(raw["versions_lost"]))


class RepairBook:
    """The repairs and releases applied to the model, in log order (``entries`` of them).

    ``last_repair_version`` is the version the newest repair made: versions before it
    held removed updates, so a new search for a bad version starts there. Not
    thread-safe; ``ModelState`` guards it.
    """

    def __init__(self) -> None:
        self.entries = 0
        self.last_repair_version = 0
        self.repairs: list[RepairSummary] = []
        self.quarantined: dict[str, QuarantinedClient] = {}
        self.removed: dict[uuid.UUID, RemovedUpdate] = {}

    def apply_repair(self, record: RepairRecord, version_before: int) -> RepairSummary:
        """Count ``record`` in (the model was at ``version_before``); its summary."""
        first = min((r.version for r in record.removed), default=version_before + 1)
        summary = RepairSummary(record.without_envelopes(), max(0, version_before - first + 1))
        self.entries = record.entry
        self.last_repair_version = record.version
        self.repairs.append(summary)
        for removed in record.removed:
            self.removed[removed.update_id] = removed
        for client_id, name in record.quarantine.items():
            self.quarantined.setdefault(
                client_id, QuarantinedClient(client_id, name, record.at, record.entry)
            )
        return summary

    def apply_release(self, record: ReleaseRecord) -> None:
        self.entries = record.entry
        self.quarantined.pop(record.client_id, None)

    def receipt(self, update_id: uuid.UUID) -> UpdateReceipt | None:
        """The first answer to a removed update: a resend is answered it, never applied."""
        removed = self.removed.get(update_id)
        if removed is None:
            return None
        return UpdateReceipt(
            update_id=removed.update_id,
            client_id=removed.client_id,
            seq=removed.seq,
            version=removed.version,
            staleness=removed.staleness,
            weight=removed.weight,
            digest=removed.digest,
        )

    def copy(self) -> RepairBook:
        book = RepairBook()
        book.entries = self.entries
        book.last_repair_version = self.last_repair_version
        book.repairs = list(self.repairs)
        book.quarantined = dict(self.quarantined)
        book.removed = dict(self.removed)
        return book

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "last_repair_version": self.last_repair_version,
            "repairs": [r.to_json() for r in self.repairs],
            "quarantined": [q.to_json() for q in self.quarantined.values()],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> RepairBook:
        """The book a checkpoint holds (``None``: a checkpoint from before repairs)."""
        book = cls()
        if raw is None:
            return book
        book.entries = int(raw["entries"])
        book.last_repair_version = int(raw["last_repair_version"])
        book.repairs = [RepairSummary.from_json(r) for r in raw["repairs"]]
        for summary in book.repairs:
            for removed in summary.record.removed:
                book.removed[removed.update_id] = removed
        for client in raw["quarantined"]:
            quarantined = QuarantinedClient.from_json(client)
            book.quarantined[quarantined.client_id] = quarantined
        return book
