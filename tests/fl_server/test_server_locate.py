"""The search for the first bad version, as a pure plan over what clients reported."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from fl_server.locate import (
    Evidence,
    Healthy,
    ProbeUpdate,
    ProbeVersion,
    RemoveUpdates,
    Stuck,
    plan,
)
from fl_server.store import UpdateRecord


def record(seq: int, version: int, client: str = "a") -> UpdateRecord:
    return UpdateRecord(
        seq=seq,
        update_id=uuid.UUID(int=seq),
        client_id=client,
        base_version=version - 1,
        staleness=0,
        weight=1.0,
        version=version,
        flush=True,
        received_at=0.0,
        digest=b"",
        envelope=b"",
    )


def evidence(
    *,
    version: int = 10,
    window: int = 16,
    since: int = 0,
    good: Sequence[int] = (),
    bad: Sequence[int] = (),
    answers: dict[uuid.UUID, bool] | None = None,
    timed_out: Sequence[uuid.UUID] = (),
) -> Evidence:
    return Evidence(
        version=version,
        floor=max(0, version - window),
        window=window,
        since=since,
        good=frozenset(good),
        bad={v: "range" for v in bad},
        answers=answers or {},
        timed_out=frozenset(timed_out),
        removed=frozenset(),
    )


def one_update_per_version(version: int) -> list[UpdateRecord]:
    return [record(version, version)]


def test_no_bad_report_since_the_last_repair_is_healthy() -> None:
    assert plan(evidence(), one_update_per_version) == Healthy()
    assert plan(evidence(since=6, bad=[5]), one_update_per_version) == Healthy()


def test_the_search_bisects_between_the_newest_good_and_the_first_bad_version() -> None:
    # The client answers: versions up to 6 are good, 7 on are bad.
    good, bad, asked = [2], [10], []
    while isinstance(
        step := plan(evidence(good=good, bad=bad), one_update_per_version), ProbeVersion
    ):
        asked.append(step.version)
        (good if step.version <= 6 else bad).append(step.version)

    assert asked == [6, 8, 7]
    assert isinstance(step, RemoveUpdates)
    assert [r.version for r in step.remove] == [7]
    assert step.culprits == step.remove


def test_without_a_good_version_the_oldest_in_reach_is_checked_first() -> None:
    assert plan(evidence(version=30, bad=[30]), one_update_per_version) == ProbeVersion(
        14, None, 30
    )
    assert plan(evidence(since=25, version=30, bad=[30]), one_update_per_version) == ProbeVersion(
        25, None, 30
    )


def test_a_bad_version_beyond_the_window_stops_the_search_with_what_to_do() -> None:
    step = plan(evidence(version=30, bad=[14, 30]), one_update_per_version)

    assert isinstance(step, Stuck)
    assert "FLSERVER_REPAIR_WINDOW=16" in step.detail
    initial = plan(evidence(bad=[0]), one_update_per_version)
    assert isinstance(initial, Stuck)
    assert "initial model" in initial.detail


def test_a_buffer_asks_each_suspects_sender_then_removes_the_bad_and_the_silent() -> None:
    buffer = [record(7, 4, "a"), record(8, 4, "b"), record(9, 4, "c")]
    ids = [r.update_id for r in buffer]

    def made(version: int) -> list[UpdateRecord]:
        return buffer if version == 4 else []

    first = plan(evidence(good=[3], bad=[4]), made)
    then = plan(evidence(good=[3], bad=[4], answers={ids[0]: True}), made)
    last = plan(
        evidence(good=[3], bad=[4], answers={ids[0]: True, ids[1]: False}, timed_out=[ids[2]]),
        made,
    )
    all_good = plan(evidence(good=[3], bad=[4], answers=dict.fromkeys(ids, True)), made)

    assert first == ProbeUpdate(3, 4, buffer[0])
    assert then == ProbeUpdate(3, 4, buffer[1])
    assert isinstance(last, RemoveUpdates)
    assert (last.remove, last.culprits, last.unanswered) == (
        (buffer[1], buffer[2]),
        (buffer[1],),
        (buffer[2],),
    )
    assert isinstance(all_good, RemoveUpdates)
    assert (all_good.remove, all_good.culprits) == (tuple(buffer), ())
