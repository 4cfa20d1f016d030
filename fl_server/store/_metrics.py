"""The report files: clients' evaluation (or integrity) reports, one JSON line each, compacted."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hefl_durable
from fl_server.errors import StateError

__all__ = ["MetricsFile"]


def _line(report: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(report), separators=(",", ":")).encode() + b"\n"


class MetricsFile:
    """Reports appended to ``path``, fsync'd; the newest ``max_reports`` are what counts.

    Parameters
    ----------
    path
        The file (mode 0600: the metrics are the hospitals' own).
    max_reports
        The file is compacted to the newest this many reports when it doubles.
    """

    def __init__(self, path: Path, max_reports: int) -> None:
        self.path = path
        self._max = max_reports
        self._count: int | None = None

    def load(self) -> list[dict[str, Any]]:
        """The newest ``max_reports`` reports, oldest first."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        if data and not data.endswith(b"\n"):
            # A report torn by a crash before it was answered: cut it so appends start clean.
            data = data[: data.rfind(b"\n") + 1]
            hefl_durable.truncate(self.path, len(data))
        reports: list[dict[str, Any]] = []
        for line in data.splitlines():
            try:
                report = json.loads(line)
            except ValueError:
                raise StateError(f"{self.path} holds a line that is not JSON") from None
            if isinstance(report, dict):
                reports.append(report)
        self._count = len(reports)
        return reports[-self._max :]

    def append(self, report: Mapping[str, Any]) -> None:
        """Add one report; durable when this returns."""
        if self._count is None:
            self.load()
        assert self._count is not None
        line = _line(report)
        if self._count + 1 > 2 * self._max:
            # Compact to the newest reports, as the service keeps them in memory.
            reports = self.load()
            kept = reports[max(0, len(reports) - self._max + 1) :]
            hefl_durable.write_atomic(self.path, *[_line(r) for r in kept], line)
            self._count = len(kept) + 1
            return
        with hefl_durable.open_append(self.path) as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._count += 1
