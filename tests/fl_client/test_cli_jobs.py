"""``hefl-client`` on jobs against the fakes: train a table, refuse bad data before any upload,
evaluate, export and predict."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import crypto
from fl_client import ClientSettings, Runner
from fl_client.export import load_exported
from fl_client.hospital_data import load_job_data
from fl_client.output import Reporter
from fl_client.table import encode_rows
from hefl_study import StudySpec
from tests.fl_client.conftest import Cli
from tests.fl_client.fakes import FakeKeyauth, FakeServer, corrupt_update, study

TABLE = {
    "task": "binary",
    "label": "y",
    "classes": ["no", "yes"],
    "min_rows": 10,
    "features": [
        {"name": "age", "type": "numeric"},
        {"name": "sex", "type": "categorical", "categories": ["F", "M"]},
    ],
}


def table_study(**sections: Any) -> StudySpec:
    return study("ward", data=TABLE, **sections)


def write_table(path: Path, rows: int = 60, **columns: list[Any]) -> Path:
    rng = np.random.default_rng(1)
    age = rng.normal(60, 10, rows).round(1)
    cells: dict[str, list[Any]] = {
        "age": [str(a) for a in age],
        "sex": [("F", "M")[i % 2] for i in range(rows)],
        "y": ["yes" if a > 60 else "no" for a in age],
    }
    cells.update(columns)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(cells)
        writer.writerows(zip(*cells.values(), strict=True))
    return path


def test_jobs_lists_name_state_version_and_description(cli: Cli, fake_server: FakeServer) -> None:
    fake_server.spec = table_study(description="ICU mortality")

    code, out, _ = cli("jobs")
    json_code, json_out, _ = cli("jobs", "--json")

    assert code == json_code == 0
    assert out.splitlines()[0].split() == ["name", "state", "version", "description"]
    assert out.splitlines()[2].split() == [
        "ward",
        "waiting_for_initial_model",
        "0/100",
        "ICU",
        "mortality",
    ]
    [job] = json.loads(json_out)
    assert (job["name"], job["spec_sha256"]) == ("ward", fake_server.spec.sha256)


def test_train_takes_everything_shared_from_the_spec_and_trains_the_table(
    cli: Cli, fake_server: FakeServer, tmp_path: Path, state: Path
) -> None:
    # Prepare
    fake_server.spec = table_study(training={"lr": 0.2, "local_steps": 2})
    fake_server.target_updates = 3
    table = write_table(tmp_path / "ward.csv")

    # Execute
    code, out, err = cli("train", "--job", "ward", "--data", str(table), "--json")

    # Assert
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "job"
    assert (events[0]["task"], events[0]["train_rows"], events[0]["test_rows"]) == (
        "binary",
        39,
        21,
    )
    updates = [e for e in events if e["event"] == "update"]
    assert [u["version"] for u in updates] == [1, 2, 3]
    assert all(u["train_steps"] == 2 for u in updates)
    assert {"auroc", "balanced_accuracy", "auprc"} <= set(updates[0])
    assert events[-1]["event"] == "stopped"
    assert events[-1]["job_stop_reason"] == "target_updates"
    assert set(events[-1]["final_metrics"]) == {
        "n_samples",
        "loss",
        "accuracy",
        "balanced_accuracy",
        "auroc",
        "auprc",
    }
    record = state / "jobs" / "ward" / "preprocessing.json"
    assert json.loads(record.read_text())["data"]["label"] == "y"
    assert (state / "jobs" / "ward" / "spec.json").read_text() == fake_server.spec_bytes().decode()


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"age": None}, ["column 'age': missing from the table"]),
        ({"ward": ["a"] * 60}, ["column 'ward': not in the study"]),
        ({"age": ["old"] + ["61"] * 59}, ["column 'age': 'old' in row 1 is not a number"]),
        ({"sex": ["X"] + ["F"] * 59}, ["column 'sex': 'X' in row 1 is not a category"]),
        ({"y": ["maybe"] + ["no"] * 59}, ["column 'y': 'maybe' in row 1 is not a class"]),
        (
            {"age": ["61"] * 5, "sex": ["F"] * 5, "y": ["no"] * 5},
            ["rows: 5 usable of 5; the study needs at least 10"],
        ),
        (
            {"age": None, "sex": ["X"] + ["F"] * 59},
            ["column 'age': missing from the table", "column 'sex': 'X' in row 1"],
        ),
    ],
)
def test_a_bad_table_is_refused_one_line_per_problem_and_nothing_reaches_the_server(
    cli: Cli,
    fake_server: FakeServer,
    tmp_path: Path,
    columns: dict[str, Any],
    expected: list[str],
) -> None:
    # Prepare: a table with one problem (the last case: two)
    fake_server.spec = table_study()
    rows = len(next((v for v in columns.values() if v is not None), [0] * 60))
    cells = {k: v for k, v in columns.items() if v is not None}
    table = write_table(tmp_path / "bad.csv", rows=max(rows, 5), **cells)
    if any(v is None for v in columns.values()):  # drop a column
        text = table.read_text().splitlines()
        drop = [k for k, v in columns.items() if v is None]
        header = text[0].split(",")
        keep = [i for i, name in enumerate(header) if name not in drop]
        table.write_text(
            "\n".join(",".join(line.split(",")[i] for i in keep) for line in text) + "\n"
        )

    # Execute
    code, _, err = cli("train", "--job", "ward", "--data", str(table))

    # Assert: exit 2, each problem on its own "hefl-client:" line; nothing was sent
    lines = err.splitlines()
    assert code == 2
    assert all(line.startswith("hefl-client: ") for line in lines)
    assert "does not fit the study's data" in lines[0]
    for want in expected:
        assert sum(want in line for line in lines[1:]) == 1, (want, lines)
    assert len(lines) == 1 + len(expected)
    assert fake_server.writes() == []
    assert fake_server.layouts_put == fake_server.uploads == []


def test_a_spec_that_is_not_the_jobs_trains_nothing(
    cli: Cli, fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.spec = table_study()
    other = table_study(training={"lr": 0.5})
    fake_server.spec_body = other.model_dump_json().encode()

    code, _, err = cli("train", "--job", "ward", "--data", str(write_table(tmp_path / "t.csv")))

    assert code == 1
    assert "SpecMismatchError" in err
    assert "refusing to train on it" in err
    assert fake_server.writes() == []


MODELS = """
import torch
from torch import nn

def wrong_outputs(input_shape, n_classes):
    return nn.Linear(input_shape[0], 3)

def float64(input_shape, n_classes, hidden=4):
    body = nn.Sequential(nn.Linear(input_shape[0], hidden), nn.ReLU(), nn.Linear(hidden, 1))
    return body.double()

def broken(input_shape, n_classes):
    raise ValueError("hidden must be set")
"""


@pytest.fixture
def models_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "ward_models.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield
    sys.modules.pop("ward_models", None)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            "ward_models:wrong_outputs",
            "model 'ward_models:wrong_outputs' maps an input of shape (3,) to outputs of shape "
            "(3,) per example; the study needs (1,)",
        ),
        (
            "ward_models:broken",
            "model factory 'ward_models:broken' raised ValueError: hidden must be set",
        ),
    ],
)
def test_a_model_factory_that_does_not_fit_is_refused_before_anything_is_sent(
    cli: Cli,
    fake_server: FakeServer,
    tmp_path: Path,
    models_here: None,
    factory: str,
    message: str,
) -> None:
    fake_server.spec = table_study(model={"factory": factory, "seed": 0})

    code, _, err = cli("train", "--job", "ward", "--data", str(write_table(tmp_path / "t.csv")))

    assert code == 2
    assert err.splitlines() == [f"hefl-client: {message}"]
    assert fake_server.writes() == []


def test_a_float64_model_factory_from_the_current_folder_trains_in_float32(
    cli: Cli, fake_server: FakeServer, tmp_path: Path, models_here: None
) -> None:
    fake_server.spec = table_study(model={"factory": "ward_models:float64", "args": {"hidden": 3}})
    fake_server.target_updates = 1

    code, _, err = cli("train", "--job", "ward", "--data", str(write_table(tmp_path / "t.csv")))

    assert code == 0, err
    assert fake_server.applied == 1


def test_a_paused_job_is_waited_out_and_a_stopped_one_ends_the_run_cleanly(
    cli: Cli, fake_server: FakeServer, tmp_path: Path
) -> None:
    fake_server.spec = table_study()
    fake_server.pause()  # paused while still waiting for its initial model
    table = str(write_table(tmp_path / "t.csv"))
    looks: list[int] = []
    original = fake_server.job

    def job() -> dict[str, Any]:
        looks.append(1)
        if len(looks) == 4:
            fake_server.stop()  # the administrator stops it while this client waits
        return original()

    fake_server.job = job  # type: ignore[method-assign]

    code, out, err = cli("train", "--job", "ward", "--data", table, "--json")

    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0, err
    assert [e["event"] for e in events] == ["job", "paused", "resumed", "stopped"]
    assert events[-1]["job_stop_reason"] == "stopped"
    assert fake_server.writes() == []


def test_evaluate_export_and_predict_reproduce_the_clients_own_model(
    cli: Cli,
    fake_server: FakeServer,
    tmp_path: Path,
    state: Path,
    fake_keyauth: FakeKeyauth,
) -> None:
    # Prepare: a hospital trained the job (its head's bias personal), then it was done
    fake_server.spec = table_study(communication={"personal": ["head.bias"]})
    fake_server.target_updates = 3
    table = write_table(tmp_path / "ward.csv")
    assert cli("train", "--job", "ward", "--data", str(table), "--quiet")[0] == 0
    new_rows = write_table(tmp_path / "new.csv", rows=12)

    # Execute
    evaluated = cli("evaluate", "--job", "ward", "--data", str(new_rows), "--json")
    exported = cli("export", "--job", "ward", "--out", str(tmp_path / "out"), "--json")
    again = cli("export", "--job", "ward", "--out", str(tmp_path / "out"))
    predicted = cli("predict", "--model", str(tmp_path / "out"), "--data", str(new_rows))

    # Assert: evaluate used the training preprocessing and the task's metrics
    assert evaluated[0] == 0, evaluated[2]
    report = json.loads(evaluated[1])
    assert (report["version"], report["preprocessing"]) == (3, "training")
    assert report["metrics"]["n_samples"] == 12
    # export wrote the four files, and refuses to overwrite them without --force
    assert exported[0] == 0, exported[2]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "export.json",
        "model.safetensors",
        "preprocessing.json",
        "spec.json",
    ]
    # private, like the state directory: personal tensors and this hospital's statistics
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == {0o600}
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    assert (meta["job"], meta["version"], meta["spec_sha256"]) == (
        "ward",
        3,
        fake_server.spec.sha256,
    )
    assert again[0] == 2
    assert "--force" in again[2]
    # the exported model gives exactly the client's outputs on the same rows
    runner = Runner(
        ClientSettings(state_dir=state, job="ward", output="quiet"),
        data=load_job_data(fake_server.spec, str(table)),
        keyauth_transport=httpx.MockTransport(fake_keyauth),
        server_transport=httpx.MockTransport(fake_server),
        reporter=Reporter("quiet"),
    )
    with runner:
        runner.evaluate_global()
        rows = encode_rows(runner.session.data.preprocessing, new_rows)  # type: ignore[arg-type]
        with torch.no_grad():
            own = runner.context.model(torch.from_numpy(rows.features)).numpy()
        personal = runner.context.model.state_dict()["head.bias"].clone()
    loaded = load_exported(tmp_path / "out")
    theirs = loaded.outputs(loaded.encode(new_rows).features)
    assert np.array_equal(own, theirs)
    assert torch.equal(loaded.model.state_dict()["head.bias"], personal)
    # predict wrote one row per table row: the probability of "yes" and the class
    assert predicted[0] == 0, predicted[2]
    lines = predicted[1].splitlines()
    assert lines[0] == "row,probability,class"
    assert len(lines) == 13
    first = lines[1].split(",")
    assert first[0] == "1"
    assert float(first[1]) == pytest.approx(1 / (1 + np.exp(-float(own[0, 0]))))
    assert first[2] == ("yes" if own[0, 0] > 0 else "no")


def test_evaluate_without_a_training_record_fits_the_table_and_says_so(
    cli: Cli, fake_server: FakeServer, tmp_path: Path, state: Path
) -> None:
    fake_server.spec = table_study()
    fake_server.target_updates = 1
    assert (
        cli("train", "--job", "ward", "--data", str(write_table(tmp_path / "a.csv")), "--quiet")[0]
        == 0
    )
    (state / "jobs" / "ward" / "preprocessing.json").unlink()

    code, out, err = cli(
        "evaluate", "--job", "ward", "--data", str(write_table(tmp_path / "b.csv"))
    )

    assert code == 0, err
    assert "statistics were fitted on" in err
    assert out.startswith("job ward version 1 on ")
    assert "auroc=" in out


def test_a_factory_study_trains_evaluates_and_exports_from_a_bundled_dataset(
    cli: Cli, fake_server: FakeServer, tmp_path: Path
) -> None:
    # Prepare: the default study takes breast cancer's 30 features from a data factory
    fake_server.target_updates = 2
    site = ["--data", "breast-cancer", "--site", "0", "--data-arg", "n_sites=3"]

    # Execute
    trained = cli("train", "--job", "cancer", *site, "--quiet")
    evaluated = cli(
        "evaluate",
        "--job",
        "cancer",
        "--data",
        "breast-cancer",
        "--site",
        "1",
        "--data-arg",
        "n_sites=3",
        "--json",
    )
    exported = cli("export", "--job", "cancer", "--out", str(tmp_path / "out"))
    predicted = cli("predict", "--model", str(tmp_path / "out"), "--data", "x.csv")

    # Assert
    assert trained[0] == 0, trained[2]
    assert evaluated[0] == 0, evaluated[2]
    report = json.loads(evaluated[1])
    assert report["preprocessing"] is None
    assert {"auroc", "n_samples"} <= set(report["metrics"])
    assert exported[0] == 0, exported[2]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "export.json",
        "model.safetensors",
        "spec.json",
    ]
    loaded = load_exported(tmp_path / "out")
    assert loaded.preprocessing is None
    assert loaded.outputs(np.zeros((3, 30))).shape == (3, 1)
    assert predicted[0] == 2
    assert "takes its data from a factory" in predicted[2]


def test_evaluate_and_export_refuse_a_corrupted_model_with_a_clear_message(
    cli: Cli, fake_server: FakeServer, tmp_path: Path, small_keys: crypto.KeyMaterial
) -> None:
    # Prepare: one round trained, then an update with a flipped bit made version 2
    site = ["--data", "breast-cancer", "--site", "0", "--data-arg", "n_sites=3"]
    assert cli("train", "--job", "cancer", *site, "--max-rounds", "1", "--quiet")[0] == 0
    cipher = crypto.ClientCipher(small_keys.secret_context, fake_server.profile)
    corrupt_update(fake_server, cipher, "flipped bit")

    # Execute
    evaluated = cli("evaluate", "--job", "cancer", *site, "--quiet")
    exported = cli("export", "--job", "cancer", "--out", str(tmp_path / "out"), "--quiet")

    # Assert: exit 1, one line saying what failed and what to do; nothing written
    for code, _, err in (evaluated, exported):
        assert code == 1
        assert err.startswith(
            "hefl-client: IntegrityError: the model of job 'cancer' at version 2 failed its "
            "integrity check (range in block 0, largest magnitude "
        )
        assert "try again once the job is healthy" in err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert [r["version"] for r in fake_server.integrity_reports] == [2, 2]
