"""Clients' integrity reports: parsed, kept, and read into what the search for a bad version knows.

A client checks every model it decrypts (finite, in range, canaries near 0) and reports
the result; a metrics report on a version says it was checked good too. ``CheckBook``
keeps the reports and what they imply: the versions checked good, those reported bad,
and each suspect's sender's check of its own update.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fl_server.domain import IntegrityReportView
from fl_server.errors import RequestError
from fl_server.parsing import client_input, validation_detail
from fl_server.schemas import IntegrityReportCreate

__all__ = [
    "CheckBook",
    "IntegrityReport",
    "parse_integrity_report",
    "report_to_json",
]

# Reports the status lists (the newest); every report is kept in the store.
_RECENT = 50


@dataclass(frozen=True)
class IntegrityReport:
    """A parsed report, before it is attributed to a client."""

    version: int
    ok: bool
    check: str | None
    blocks: tuple[int, ...]
    update_id: uuid.UUID | None


def parse_integrity_report(body: bytes) -> IntegrityReport:
    """The report of a ``IntegrityReportCreate`` JSON body.

    Raises
    ------
    RequestError
        Not such a body (``request_invalid``, 422); the detail names each field at fault
        and never echoes input.
    """
    with client_input("the integrity report", RequestError):
        try:
            report = IntegrityReportCreate.model_validate_json(body)
        except ValidationError as exc:
            detail = validation_detail(exc)
            raise RequestError(f"invalid integrity report: {detail}") from None
    if report.ok and report.check is not None:
        raise RequestError("invalid integrity report: an ok report names no failed check")
    if any(b < 0 for b in report.blocks):
        raise RequestError("invalid integrity report: blocks are non-negative indices")
    return IntegrityReport(
        version=report.version,
        ok=report.ok,
        check=report.check,
        blocks=tuple(report.blocks),
        update_id=report.update_id,
    )


def report_to_json(
    report: IntegrityReport, client_id: str, client_name: str | None, at: float
) -> dict[str, Any]:
    """The stored form of a report from ``client_id`` received at ``at``."""
    return {
        "client_id": client_id,
        "client_name": client_name,
        "version": report.version,
        "ok": report.ok,
        "check": report.check,
        "blocks": list(report.blocks),
        "update_id": None if report.update_id is None else str(report.update_id),
        "received_at": at,
    }


def _view(raw: Mapping[str, Any]) -> IntegrityReportView:
    name, update_id = raw.get("client_name"), raw.get("update_id")
    return IntegrityReportView(
        client_id=str(raw["client_id"]),
        client_name=None if name is None else str(name),
        version=int(raw["version"]),
        ok=bool(raw["ok"]),
        check=None if raw.get("check") is None else str(raw["check"]),
        blocks=tuple(int(b) for b in raw.get("blocks") or ()),
        update_id=None if update_id is None else str(update_id),
        received_at=float(raw["received_at"]),
    )


class CheckBook:
    """What clients said of the models they checked.

    ``good`` and ``bad`` hold versions (bad with the first failed check reported);
    ``answers`` each suspect sender's check of its own update. Changed on the apply
    worker; the status reads copies from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.good: set[int] = set()
        self.bad: dict[int, str] = {}
        self.answers: dict[uuid.UUID, bool] = {}
        self._recent: deque[IntegrityReportView] = deque(maxlen=_RECENT)
        self.total = 0

    def add(self, raw: Mapping[str, Any], *, sender_of: Mapping[uuid.UUID, str]) -> None:
        """Take one stored report; an answer about an update counts from its sender only.

        ``sender_of`` maps the updates the server still knows to their senders.
        """
        view = _view(raw)
        with self._lock:
            self._recent.append(view)
            self.total += 1
        if view.update_id is not None:
            update_id = uuid.UUID(view.update_id)
            if sender_of.get(update_id) == view.client_id:
                self.answers[update_id] = view.ok
        elif view.ok:
            self.good.add(view.version)
        else:
            self.bad.setdefault(view.version, view.check or "unspecified")

    def saw_good(self, version: int) -> None:
        """A metrics report on ``version``: its client checked it and trained on it."""
        self.good.add(version)

    def forget(self, *, good_below: int, bad_below: int) -> None:
        """Drop what no longer counts: good versions too old to rebuild, and both before
        the last repair (they held removed updates)."""
        self.good = {v for v in self.good if v >= good_below}
        self.bad = {v: c for v, c in self.bad.items() if v >= bad_below}

    def recent(self) -> tuple[IntegrityReportView, ...]:
        with self._lock:
            return tuple(self._recent)
