"""Locating a bad update: from clients' checks to the next probe, or to the updates to remove.

Pure: ``plan`` reads what clients reported and what the log can rebuild, and says what
to do next. Versions only get worse after the first bad one (clients train on no bad
model), so a bisection between the newest version known good (``lo``) and the first
reported bad (``hi``) finds the first bad version; the updates that formed it are the
suspects. With one suspect it is the culprit; with a buffer's K, each suspect's own
sender checks version ``lo`` plus its update, so no hospital sees another's update.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

from fl_server.store import UpdateRecord

__all__ = [
    "Evidence",
    "Healthy",
    "Plan",
    "ProbeUpdate",
    "ProbeVersion",
    "RemoveUpdates",
    "Stuck",
    "plan",
]


@dataclass(frozen=True)
class Evidence:
    """What the search knows.

    Attributes
    ----------
    version
        The model's version now.
    floor
        The oldest version the log can rebuild (``window`` versions back).
    window
        ``FLSERVER_REPAIR_WINDOW``.
    since
        The version the newest repair made (0: none). Versions before it held removed
        updates: what clients said of them no longer counts.
    good
        Versions checked good: an ok report, a passed probe, a metrics report.
    bad
        Versions reported bad, each with the check that failed.
    answers
        Each suspect's sender's check of its own update (``True``: good).
    timed_out
        Suspects whose sender did not answer in time.
    removed
        Updates removed already.
    """

    version: int
    floor: int
    window: int
    since: int
    good: Set[int]
    bad: Mapping[int, str]
    answers: Mapping[uuid.UUID, bool]
    timed_out: Set[uuid.UUID]
    removed: Set[uuid.UUID]


@dataclass(frozen=True)
class Healthy:
    """No version since the last repair is reported bad."""


@dataclass(frozen=True)
class ProbeVersion:
    """Ask clients to check ``version``, rebuilt (``lo`` is ``None`` while unverified)."""

    version: int
    lo: int | None
    hi: int


@dataclass(frozen=True)
class ProbeUpdate:
    """Ask the sender of ``update`` to check version ``lo`` plus its update."""

    lo: int
    hi: int
    update: UpdateRecord


@dataclass(frozen=True)
class RemoveUpdates:
    """Remove ``remove``; quarantine the senders of ``culprits`` (attributed to them)."""

    lo: int
    hi: int
    remove: tuple[UpdateRecord, ...]
    culprits: tuple[UpdateRecord, ...]
    unanswered: tuple[UpdateRecord, ...]


@dataclass(frozen=True)
class Stuck:
    """The search cannot go on; ``detail`` says why and what the operator can do."""

    lo: int | None
    hi: int
    detail: str


Plan = Healthy | ProbeVersion | ProbeUpdate | RemoveUpdates | Stuck


def plan(evidence: Evidence, made: Callable[[int], Sequence[UpdateRecord]]) -> Plan:
    """The next step of the search; ``made(v)`` gives the updates that formed version ``v``."""
    e = evidence
    reported = [v for v in e.bad if e.since <= v <= e.version]
    if not reported:
        return Healthy()
    hi = min(reported)
    start = max(e.since, e.floor)
    known = [v for v in e.good if start <= v < hi]
    lo = max(known) if known else None
    if lo is None:
        if start >= hi:
            return Stuck(None, hi, _beyond_reach(e, hi, start))
        return ProbeVersion(start, None, hi)  # the search needs a good version to start from
    if hi - lo > 1:
        return ProbeVersion((lo + hi) // 2, lo, hi)
    suspects = [r for r in made(hi) if r.update_id not in e.removed]
    if not suspects:
        return Stuck(
            lo,
            hi,
            f"version {hi} is the first bad version but holds no update the server can "
            "remove; stop the job, or remove updates by hand (hefl-admin job repair)",
        )
    if len(suspects) == 1:
        return RemoveUpdates(lo, hi, tuple(suspects), tuple(suspects), ())
    for suspect in suspects:
        if suspect.update_id not in e.answers and suspect.update_id not in e.timed_out:
            return ProbeUpdate(lo, hi, suspect)
    culprits = tuple(s for s in suspects if e.answers.get(s.update_id) is False)
    unanswered = tuple(
        s for s in suspects if s.update_id not in e.answers and s.update_id in e.timed_out
    )
    if not culprits and not unanswered:
        # Each sender found its own update good on a good base, yet together they are bad:
        # none is to blame alone, so all go and nobody is quarantined.
        return RemoveUpdates(lo, hi, tuple(suspects), (), ())
    return RemoveUpdates(lo, hi, culprits + unanswered, culprits, unanswered)


def _beyond_reach(e: Evidence, hi: int, start: int) -> str:
    if hi == 0:
        return (
            "the initial model (version 0) is reported bad: no update can be removed to "
            "repair it; stop the job and start the study again"
        )
    if e.since and start == e.since and hi == e.since:
        return (
            f"version {hi}, made by the last repair, is reported bad too, and no version "
            f"before it can be searched; stop the job, or remove updates by hand "
            f"(hefl-admin job repair)"
        )
    return (
        f"version {hi} is reported bad and the versions before it are older than the repair "
        f"window (FLSERVER_REPAIR_WINDOW={e.window}: versions {e.floor} to {e.version} can "
        f"be rebuilt), so the bad update cannot be found or removed; stop the job and start "
        f"the study again"
    )
