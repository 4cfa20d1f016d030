"""Adapting the shared model to a hospital's rows before it is taken home: ``fl_client.
adaptation`` and ``hefl-client export --adapt-epochs``."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from fl_client.adaptation import PRIVACY_NOTE, Adaptation, adapt_model
from fl_client.data import load_client_data
from fl_client.export import load_exported
from fl_client.models import build_model, resolve_model
from fl_client.training import TrainConfig, evaluate
from tests.fl_client.conftest import Cli
from tests.fl_client.fakes import FakeServer, study
from tests.fl_client.test_cli_jobs import table_study, write_table

SITE = ["--data", "breast-cancer", "--site", "0", "--data-arg", "n_sites=3"]


def _state_files(state: Path) -> dict[str, str]:
    return {
        str(p.relative_to(state)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(state.rglob("*"))
        if p.is_file()
    }


def test_adapting_trains_the_studys_recipe_for_whole_epochs_and_scores_both_models() -> None:
    data = load_client_data("breast-cancer", "0", n_sites=3)
    model = build_model(resolve_model("logistic"), data.input_shape, data.n_classes, 0)
    config = TrainConfig(steps=5, batch_size=32, lr=0.1)
    shared = copy.deepcopy(model)

    adaptation = adapt_model(model, data, config, 2, version=7)

    # 2 epochs of the study's batches, its steps ignored
    assert adaptation.steps == 2 * math.ceil(len(data.train) / 32)
    assert (adaptation.train_rows, adaptation.held_out_rows) == (len(data.train), len(data.test))
    assert adaptation.before == evaluate(shared, data.test).to_metrics()
    assert adaptation.after == evaluate(model, data.test).to_metrics()
    assert adaptation.after["loss"] < adaptation.before["loss"]  # an untrained start
    assert adaptation.worse is False
    # the same version on the same rows gives the same model
    again = copy.deepcopy(shared)
    adapt_model(again, data, config, 2, version=7)
    for name, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[name])
    with pytest.raises(ValueError, match="at least 1 epoch"):
        adapt_model(shared, data, config, 0, version=7)


def test_export_adapts_the_model_records_both_scores_and_leaves_the_job_state_alone(
    cli: Cli, fake_server: FakeServer, tmp_path: Path, state: Path
) -> None:
    # Prepare: two rounds trained on site 0
    fake_server.target_updates = 2
    assert cli("train", "--job", "cancer", *SITE, "--quiet")[0] == 0
    before = _state_files(state)

    # Execute: the shared model, and the model adapted for 3 epochs
    shared = cli("export", "--job", "cancer", "--out", str(tmp_path / "shared"), "--json")
    adapted = cli(
        "export", "--job", "cancer", "--out", str(tmp_path / "adapted"), "--adapt-epochs", "3",
        *SITE,
    )  # fmt: skip

    # Assert: the human output names the epochs and each metric shared -> adapted
    assert shared[0] == 0, shared[2]
    assert adapted[0] == 0, adapted[2]
    assert "adapted to this hospital's rows: 3 epoch(s)" in adapted[1]
    assert "accuracy" in adapted[1]
    assert " -> " in adapted[1]
    assert json.loads(shared[1])["adaptation"] is None
    record = json.loads((tmp_path / "adapted" / "export.json").read_text())["adaptation"]
    data = load_client_data("breast-cancer", "0", n_sites=3)
    assert record["epochs"] == 3
    assert record["steps"] == 3 * math.ceil(len(data.train) / 32)
    assert (record["train_rows"], record["held_out_rows"]) == (len(data.train), len(data.test))
    # "before" is the shared model exported alongside, "after" the adapted model written
    for name, metrics in (("shared", record["before"]), ("adapted", record["after"])):
        model = load_exported(tmp_path / name).model
        assert evaluate(model, data.test).to_metrics() == pytest.approx(metrics)
    assert record["after"] != record["before"]
    # nothing of the job's state changed: journal, cache, progress, residual
    assert _state_files(state) == before


def test_export_refuses_adapting_without_data_data_without_adapting_and_a_negative_count(
    cli: Cli, fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.target_updates = 1
    assert cli("train", "--job", "cancer", *SITE, "--quiet")[0] == 0
    out = ["export", "--job", "cancer", "--out", str(tmp_path / "out")]

    no_data = cli(*out, "--adapt-epochs", "2")
    no_epochs = cli(*out, *SITE)
    site_only = cli(*out, "--site", "0")
    negative = cli(*out, "--adapt-epochs", "-1", *SITE)

    assert no_data[0] == no_epochs[0] == site_only[0] == negative[0] == 2
    assert no_data[2].splitlines() == [
        "hefl-client: --adapt-epochs needs --data: the table (or data factory) this hospital "
        "trained the job on"
    ]
    only_to_adapt = [
        "hefl-client: export reads --data, --site and --data-arg only to adapt the model: add "
        "--adapt-epochs N"
    ]
    assert no_epochs[2].splitlines() == only_to_adapt
    assert site_only[2].splitlines() == only_to_adapt
    assert negative[2].splitlines() == ["hefl-client: --adapt-epochs must be 0 or more, not -1"]
    assert not (tmp_path / "out").exists()


def test_a_table_study_adapts_on_its_training_table_and_refuses_another(
    cli: Cli, fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.spec = table_study()
    fake_server.target_updates = 1
    table = str(write_table(tmp_path / "ward.csv"))
    assert cli("train", "--job", "ward", "--data", table, "--quiet")[0] == 0
    other = str(write_table(tmp_path / "other.csv", rows=40))

    same = cli(
        "export", "--job", "ward", "--out", str(tmp_path / "a"), "--adapt-epochs", "1",
        "--data", table, "--json",
    )  # fmt: skip
    refused = cli(
        "export", "--job", "ward", "--out", str(tmp_path / "b"), "--adapt-epochs", "1",
        "--data", other,
    )  # fmt: skip

    assert same[0] == 0, same[2]
    assert json.loads(same[1])["adaptation"]["epochs"] == 1
    assert load_exported(tmp_path / "a").preprocessing is not None
    assert refused[0] == 2
    assert "does not encode as this hospital's training of job 'ward' did" in refused[2]
    assert not (tmp_path / "b").exists()


def test_a_study_with_sample_level_dp_exports_and_adapts_and_says_what_dp_does_not_cover(
    cli: Cli, fake_server: FakeServer, tmp_path: Path, state: Path
) -> None:
    # Prepare: one DP-SGD round trained on site 0
    fake_server.spec = study(
        privacy={"epsilon": 2.0, "delta": 1e-5, "max_grad_norm": 1.0, "rounds": 3}
    )
    fake_server.target_updates = 1
    assert cli("train", "--job", "cancer", *SITE, "--quiet")[0] == 0
    ledger = (state / "jobs" / "cancer" / "privacy.json").read_bytes()

    # Execute
    shared = cli("export", "--job", "cancer", "--out", str(tmp_path / "shared"))
    adapted = cli(
        "export", "--job", "cancer", "--out", str(tmp_path / "adapted"), "--adapt-epochs", "1",
        *SITE,
    )  # fmt: skip

    # Assert: both exported; the adapted one says the study's guarantee does not cover it
    assert shared[0] == 0, shared[2]
    assert adapted[0] == 0, adapted[2]
    assert f"the adapted model is {PRIVACY_NOTE}" in adapted[1]
    record = json.loads((tmp_path / "adapted" / "export.json").read_text())["adaptation"]
    assert record["privacy"] == PRIVACY_NOTE
    # the privacy ledger is the training's, unspent by the adaptation
    assert (state / "jobs" / "cancer" / "privacy.json").read_bytes() == ledger


def test_a_study_without_privacy_carries_no_privacy_note(
    cli: Cli, fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.target_updates = 1
    assert cli("train", "--job", "cancer", *SITE, "--quiet")[0] == 0

    code, out, err = cli(
        "export", "--job", "cancer", "--out", str(tmp_path / "out"), "--adapt-epochs", "1",
        *SITE, "--json",
    )  # fmt: skip

    assert code == 0, err
    assert "privacy" not in json.loads(out)["adaptation"]


def test_an_adapted_model_worse_on_the_held_out_rows_is_exported_with_a_warning(
    cli: Cli, fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_server.target_updates = 1
    assert cli("train", "--job", "cancer", *SITE, "--quiet")[0] == 0

    def worse(*args: Any, **kwargs: Any) -> Adaptation:
        done = adapt_model(*args, **kwargs)
        assert done.before is not None
        return replace(done, after={**done.before, "loss": done.before["loss"] + 1})

    monkeypatch.setattr("fl_client.results.adapt_model", worse)

    code, _, err = cli(
        "export", "--job", "cancer", "--out", str(tmp_path / "out"), "--adapt-epochs", "1",
        *SITE,
    )  # fmt: skip

    assert code == 0, err
    assert "held-out loss is above the shared model's" in err
    assert "export without --adapt-epochs" in err
    record = json.loads((tmp_path / "out" / "export.json").read_text())["adaptation"]
    assert record["worse"] is True
