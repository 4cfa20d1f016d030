"""What the client shows: tqdm progress bars and readable lines, JSON lines, or nothing.

* ``human``: progress bars on stderr, one readable line per event on stdout.
* ``json``: one JSON object per event on stdout (``{"event": ..., ...}``), no bars.
* ``quiet``: nothing but errors (which the CLI prints to stderr).

Events carry numbers and identifiers only; never a token, secret or key.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed

from fl_client.events import ClientWarning, Event, ProgressBar
from fl_client.rounds.port import JobInfo
from fl_client.settings import OutputMode

__all__ = ["ProgressBar", "Reporter", "job_to_dict", "render_jobs", "render_status"]


class _NoBar:
    def update(self, n: float = 1) -> object:
        return None

    def set_total(self, total: float) -> None:
        return None


class _TqdmBar:
    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, n: float = 1) -> object:
        return self._bar.update(n)

    def set_total(self, total: float) -> None:
        if self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()


def _human(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_human(v)}" for k, v in value.items()) + "}"
    return str(value)


class Reporter:
    """Renders a client's progress bars and events for one output mode (an ``EventSink``).

    Parameters
    ----------
    mode
        ``human``, ``json`` or ``quiet``.
    out, err
        Where events and bars go (stdout and stderr by default).
    """

    def __init__(
        self, mode: OutputMode = "human", *, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.mode = mode
        self._out = out or sys.stdout
        self._err = err or sys.stderr

    @contextmanager
    def bar(
        self, total: float | None, desc: str, unit: str = "it", *, unit_scale: bool = False
    ) -> Iterator[ProgressBar]:
        """A progress bar in human mode, a no-op otherwise."""
        if self.mode != "human":
            yield _NoBar()
            return
        with tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            unit_divisor=1024 if unit == "B" else 1000,
            file=self._err,
            leave=False,
            dynamic_ncols=True,
        ) as progress:
            yield _TqdmBar(progress)

    def emit(self, event: Event) -> None:
        """Render a typed event (``fl_client.events``)."""
        if isinstance(event, ClientWarning):
            self.warn(event.message)
            return
        text = event.text()
        if text is not None and self.mode == "human":
            self._out.write(f"[{event.name}] {text}\n")
            self._out.flush()
        else:
            self.event(event.name, **event.fields())

    def event(self, name: str, /, **fields: Any) -> None:
        """Report something that happened: a round's numbers, a resend, the end."""
        if self.mode == "json":
            self._out.write(json.dumps({"event": name, **fields}, sort_keys=True) + "\n")
            self._out.flush()
        elif self.mode == "human":
            text = " ".join(f"{k}={_human(v)}" for k, v in fields.items())
            self._out.write(f"[{name}] {text}\n".rstrip() + "\n" if text else f"[{name}]\n")
            self._out.flush()

    def warn(self, message: str) -> None:
        """A problem that did not stop the client (printed in every mode but json)."""
        if self.mode == "json":
            self.event("warning", message=message)
        else:
            self._err.write(f"warning: {message}\n")
            self._err.flush()


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> list[str]:
    all_rows = [list(header)] if header else []
    all_rows += [list(r) for r in rows]
    if not all_rows:
        return []
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(all_rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in all_rows
    ]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _flat(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _records_table(records: Sequence[Mapping[str, Any]], first: str | None = None) -> list[str]:
    records = [_flat(r) for r in records]
    columns: list[str] = [first] if first is not None else []
    for record in records:
        columns += [k for k in record if k not in columns]
    return _table([[_scalar(r.get(c)) for c in columns] for r in records], columns)


def render_status(status: Mapping[str, Any], *, last: int = 10) -> str:
    """The server's status as readable tables: scalars first, then one table per section.

    A mapping of mappings (e.g. per-client counts) becomes a table with one row per key;
    a mapping of scalars a two-column table; a list of records its last ``last`` rows.
    """
    scalars = [(k, _scalar(v)) for k, v in status.items() if not isinstance(v, dict | list)]
    lines = _table(scalars)
    for key, value in status.items():
        if isinstance(value, dict) and value:
            lines += ["", f"{key}:"]
            if all(isinstance(v, dict) for v in value.values()):
                records = [{"": k, **v} for k, v in value.items()]
                lines += _records_table(records, first="")
            else:
                lines += _table([(str(k), _scalar(v)) for k, v in value.items()])
        elif isinstance(value, list) and value:
            lines += [
                "",
                f"{key}:" + (f" (last {last} of {len(value)})" if len(value) > last else ""),
            ]
            if all(isinstance(v, dict) for v in value):
                lines += _records_table(value[-last:])
            else:
                lines += [_scalar(v) for v in value[-last:]]
        elif isinstance(value, dict | list):
            lines += ["", f"{key}: (none)"]
    return "\n".join(lines)


def job_to_dict(job: JobInfo) -> dict[str, Any]:
    """A job as JSON values (the fingerprint in hex)."""
    out = dataclasses.asdict(job)
    fingerprint = job.layout_fingerprint
    out["layout_fingerprint"] = fingerprint.hex() if fingerprint is not None else None
    return out


def _job_state(job: JobInfo) -> str:
    # why a done job is done; what the server does about a corrupted model meanwhile
    state = job.state if job.stop_reason is None else f"{job.state} ({job.stop_reason})"
    integrity = job.integrity.state
    return state if integrity == "healthy" else f"{state}, {integrity} a bad update"


def render_jobs(jobs: Sequence[JobInfo]) -> str:
    """The server's jobs as a table: name, state (and integrity when not healthy),
    version of target, description."""
    if not jobs:
        return "no jobs"
    rows = [
        [
            job.name,
            _job_state(job),
            f"{job.version}/{job.target_updates if job.target_updates is not None else '-'}",
            job.description,
        ]
        for job in jobs
    ]
    return "\n".join(_table(rows, ["name", "state", "version", "description"]))


def render_adaptation(adaptation: Mapping[str, Any] | None) -> str:
    """An export's adaptation (``export.json``'s ``adaptation``) as the lines that follow
    "exported to": what was trained, and each held-out metric before → after."""
    if adaptation is None:
        return ""
    head = (
        f"\nadapted to this hospital's rows: {adaptation['epochs']} epoch(s), "
        f"{adaptation['steps']} steps on {adaptation['train_rows']} training rows"
    )
    before, after = adaptation["before"], adaptation["after"]
    if before is None or after is None:
        return head + "; no held-out rows to score it on"
    scored = [
        f"  {name:<18} {before[name]:.4f} -> {after[name]:.4f}"
        for name in before
        if name != "n_samples" and name in after
    ]
    held_out = f"\non its {adaptation['held_out_rows']} held-out rows, shared -> adapted:"
    note = f"\nthe adapted model is {adaptation['privacy']}" if "privacy" in adaptation else ""
    return head + held_out + "\n" + "\n".join(scored) + note
