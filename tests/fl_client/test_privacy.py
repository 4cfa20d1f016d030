"""Sample-level DP at a hospital: DP-SGD rounds, the durable accountant, the budget stop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from torch import nn

from fl_client import ConfigError, LocalStateError
from fl_client.errors import PrivacyBudgetSpentError
from fl_client.events import Stopped
from fl_client.state import LocalState, PrivacyLedger
from tests.fl_client.conftest import MakeRunner
from tests.fl_client.fakes import FakeServer, study
from tests.fl_client.memory_port import RecordingSink

_PRIVATE = {"epsilon": 2.0, "delta": 1e-5, "max_grad_norm": 1.0, "rounds": 3}


class BatchNormModel(nn.Module):  # type: ignore[misc]
    """A model DP-SGD cannot train: batch norm mixes the examples of a batch."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_shape[0], 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x: Any) -> Any:
        return self.head(self.body(x))


class LayerNormModel(nn.Module):  # type: ignore[misc]
    """A custom model Opacus can wrap (layer norm is per example)."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_shape[0], 8), nn.LayerNorm(8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x: Any) -> Any:
        return self.head(self.body(x))


def _ledger(runner: Any) -> dict[str, Any]:
    path = runner.context.state.root / "privacy.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_each_round_is_counted_and_reported_and_survives_a_restart(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare
    runner = make_runner(spec=study(privacy=_PRIVATE))

    # Execute
    runner.run_round()
    runner.run_round()
    spent = runner.context.privacy.epsilon() if runner.context.privacy else None
    runner.close()
    again = make_runner()

    # Assert
    assert _ledger(runner)["rounds"] == 2
    privacy = again.context.privacy
    assert privacy is not None
    assert privacy.rounds == 2
    assert privacy.epsilon() == spent
    assert 0 < privacy.epsilon() < _PRIVATE["epsilon"]
    reported = [m["privacy"] for m in fake_server.metrics]
    assert [r["epsilon"] for r in reported] == sorted(r["epsilon"] for r in reported)
    assert reported[-1] == {"epsilon": spent, "delta": 1e-5, "target_epsilon": 2.0}


def test_a_hospital_whose_budget_is_spent_stops_and_sends_nothing_more(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare
    sink = RecordingSink()
    runner = make_runner(spec=study(privacy=_PRIVATE), reporter=sink)

    # Execute
    with pytest.raises(PrivacyBudgetSpentError, match=r"spent its privacy budget.*after 3 rounds"):
        runner.run()
    uploads = len(fake_server.uploads)
    runner.close()
    with pytest.raises(PrivacyBudgetSpentError):
        make_runner().run()

    # Assert
    assert uploads == 3 == len(fake_server.uploads)
    stopped = [e for e in sink.events if isinstance(e, Stopped)]
    assert stopped == [Stopped(reason="privacy_budget_spent", rounds=3)]
    assert fake_server.metrics[-1]["privacy"]["epsilon"] <= _PRIVATE["epsilon"]


def test_a_round_refused_as_too_stale_is_spent_too(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare: the refused update reached the server, so its round cost privacy
    runner = make_runner(spec=study(privacy=_PRIVATE))
    fake_server.too_stale_next = 1

    # Execute
    with pytest.raises(PrivacyBudgetSpentError, match="after 3 rounds"):
        runner.run()

    # Assert: three rounds trained, two of them applied
    assert _ledger(runner)["rounds"] == 3
    assert fake_server.applied == 2


class _Killed(BaseException):
    """kill -9 between journaling an update and sending it."""


def test_a_round_killed_before_its_update_is_sent_stays_spent_once(
    make_runner: MakeRunner, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    runner = make_runner(spec=study(privacy=_PRIVATE))

    def killed(*_: object) -> None:
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr("fl_client.rounds.loop.send", killed)
        with pytest.raises(_Killed):
            runner.run_round()
    runner.close()

    # Execute: the restarted client resends the journaled update, then trains once more
    again = make_runner()
    spent_at_start = again.context.privacy.rounds if again.context.privacy else None
    again.run_round()

    # Assert
    assert spent_at_start == 1
    assert fake_server.applied == 2
    assert _ledger(again)["rounds"] == 2


def test_a_model_dp_sgd_cannot_train_is_refused_naming_its_layer(
    make_runner: MakeRunner,
) -> None:
    spec = study(privacy=_PRIVATE, model={"factory": "tests.fl_client.test_privacy:BatchNormModel"})

    with pytest.raises(ConfigError, match=r"layer 'body\.1' \(BatchNorm1d\) cannot be"):
        make_runner(spec=spec)


def test_a_custom_model_opacus_can_wrap_trains_privately(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    spec = study(privacy=_PRIVATE, model={"factory": "tests.fl_client.test_privacy:LayerNormModel"})
    runner = make_runner(spec=spec)

    result = runner.run_round()

    assert result is not None
    assert len(fake_server.uploads) == 1
    assert runner.context.privacy is not None
    assert runner.context.privacy.rounds == 1


def test_a_corrupt_ledger_is_an_error_never_a_fresh_budget(tmp_path: Any) -> None:
    state = LocalState(tmp_path / "s").job("icu")
    state.save_privacy(PrivacyLedger("rdp", ((1.1, 0.1, 30),), rounds=3))
    assert state.load_privacy() == PrivacyLedger("rdp", ((1.1, 0.1, 30),), rounds=3)
    path = state.root / "privacy.json"

    for corrupt in ('{"accountant": "rdp"}', "not json", '{"accountant": "rdp", "rounds": 1, '
                    '"history": [[-1, 0.1, 3]]}'):  # fmt: skip
        path.write_text(corrupt)
        with pytest.raises(LocalStateError, match=r"privacy\.json is corrupt"):
            state.load_privacy()
