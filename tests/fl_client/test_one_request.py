"""One request per update: the update's answer carries the next lease and model."""

from __future__ import annotations

import pytest

from tests.fl_client.conftest import MakeRunner
from tests.fl_client.fakes import FakeServer


def _paths(fake_server: FakeServer, mark: int) -> list[str]:
    return [f"{r.method} {r.url.path.rsplit('/', 1)[-1]}" for r in fake_server.requests[mark:]]


def test_the_next_round_trains_on_the_model_the_update_answer_carried(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare: a server that answers lease=next, a hospital past its first round
    fake_server.answers_lease_next = True
    runner = make_runner()
    first = runner.run_round()
    assert first is not None
    mark = len(fake_server.requests)

    # Execute
    results = [runner.run_round() for _ in range(3)]

    # Assert: one request per update, each on the version its previous update made
    assert _paths(fake_server, mark) == ["POST updates"] * 3
    assert all(r is not None for r in results)
    done = [first, *results]
    assert [r.base_version for r in done[1:]] == [r.version for r in done[:-1]]  # type: ignore[union-attr]
    assert fake_server.applied == 4
    # the update asked for the blocks changed since the version it was trained on
    last = fake_server.requests[-1]
    assert last.url.params["lease"] == "next"
    assert last.url.params["since"] == str(results[-1].base_version)  # type: ignore[union-attr]


def test_a_plain_202_leaves_the_next_round_to_take_its_lease(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare: a server that ignores lease=next (an older one, or FedBuff's answer)
    runner = make_runner()
    runner.run_round()
    mark = len(fake_server.requests)

    # Execute
    result = runner.run_round()

    # Assert: the two requests of before
    assert result is not None
    assert _paths(fake_server, mark) == ["POST leases", "POST updates"]


def test_a_crash_after_the_answer_with_the_lease_resends_and_commits_once(
    make_runner: MakeRunner, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the update is applied and answered with the next lease, and the process
    # dies before it commits the progress (kill -9 between the answer and the commit)
    fake_server.answers_lease_next = True
    runner = make_runner()
    state = runner.context.state

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(state, "acknowledge_pending", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.run_round()
    monkeypatch.undo()
    pending = state.load_pending()
    assert pending is not None
    assert fake_server.applied == 1
    assert state.load_progress().rounds == 0

    # Execute: a new process on the same state directory
    restarted = make_runner(max_rounds=2)
    summary = restarted.run()

    # Assert: the resend was acknowledged as a duplicate (with a lease too), committed once,
    # and the hospital trained on
    assert summary.results[0].duplicate
    assert summary.results[0].update_id == str(pending.update_id)
    assert not summary.results[1].duplicate
    assert fake_server.applied == 2
    progress = restarted.context.state.load_progress()
    assert progress.rounds == 2
    assert restarted.context.state.load_pending() is None
