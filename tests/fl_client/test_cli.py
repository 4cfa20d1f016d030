"""The CLI: settings precedence, refusals before any I/O, the status table."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fl_client import cli
from fl_client.cli import build_parser, main
from fl_client.errors import AccessTokenError
from fl_client.output import render_status
from fl_client.settings import ClientSettings
from fl_client.transport import ServerClient


def _settings(argv: list[str]) -> ClientSettings:
    return cli._settings(build_parser().parse_args(argv))


def test_options_override_environment_which_overrides_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLCLIENT_JOB", "icu")
    monkeypatch.setenv("FLCLIENT_MAX_ROUNDS", "7")
    monkeypatch.setenv("FLCLIENT_DATA_ARGS", '{"path": "a.csv"}')
    from_env = _settings(["train"])
    from_cli = _settings(
        ["train", "--job", "heart", "--max-rounds", "3", "--data-arg", "n_sites=4", "--json"]
    )
    assert (from_env.job, from_env.max_rounds, from_env.data_args) == ("icu", 7, {"path": "a.csv"})
    # a --data-arg adds to FLCLIENT_DATA_ARGS (and wins for the same key)
    assert (from_cli.job, from_cli.max_rounds) == ("heart", 3)
    assert from_cli.data_args == {"path": "a.csv", "n_sites": 4}
    assert from_cli.output == "json"
    assert _settings(["train", "--threads", "2", "--data-arg", "path=x.csv"]).data_args == {
        "path": "x.csv"
    }


def test_a_shared_setting_is_refused_with_where_the_spec_sets_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--job",
            "icu",
            "--lr",
            "0.1",
            "--personal",
            "h.*",
            "--no-error-feedback",
            "--state-dir",
            str(tmp_path / "s"),
        ]
    )

    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "hefl-client: --lr is not a hospital's to set: the job's spec decides it (training.lr)",
        "hefl-client: --personal is not a hospital's to set: the job's spec decides it "
        "(communication.personal)",
        "hefl-client: --no-error-feedback is not a hospital's to set: the job's spec decides "
        "it (communication.error_feedback)",
    ]
    assert not (tmp_path / "s").exists()


def test_an_unknown_or_shared_environment_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An old env file: its model and learning rate must not seem to apply.
    monkeypatch.setenv("FLCLIENT_LR", "0.1")
    monkeypatch.setenv("FLCLIENT_SERVR_URL", "http://127.0.0.1:1")

    code = main(["train", "--job", "icu", "--state-dir", str(tmp_path / "s")])

    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "hefl-client: FLCLIENT_LR is not a hospital's to set: the job's spec decides it "
        "(training.lr)",
        "hefl-client: FLCLIENT_SERVR_URL is not a setting of hefl-client (unset it)",
    ]
    assert not (tmp_path / "s").exists()


def test_insecure_server_is_refused_before_anything_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--server", "http://10.9.8.7:8800", "--state-dir", str(tmp_path / "s")])
    assert code == 2
    assert "--allow-insecure-http" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_invalid_settings_exit_2_with_the_field_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--max-rounds", "0"]) == 2
    assert "max_rounds" in capsys.readouterr().err


def test_train_without_enrollment_says_how_to_enroll(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--job", "icu", "--state-dir", str(tmp_path), "--quiet"]) == 1
    assert "hefl-client enroll" in capsys.readouterr().err


def test_the_enrollment_token_can_come_from_stdin() -> None:
    assert cli._read_token("-", io.StringIO("tok-123\n")) == "tok-123"
    assert cli._read_token(" tok ", io.StringIO()) == "tok"


def test_status_is_rendered_as_readable_tables() -> None:
    status = {
        "state": "training",
        "version": 12,
        "target_updates": 40,
        "mean_weight": 0.8125,
        "layout_fingerprint": None,
        "updates_rejected": {"too_stale": 2},
        "staleness_histogram": {"0": 9, "1": 3},
        "clients": {
            "c1": {"client_name": "cleveland", "updates_applied": 7, "last_seen": "2026-11-23"},
            "c2": {"client_name": "hungary", "updates_applied": 5, "last_seen": None},
        },
        "metrics": [
            {"version": v, "reports": 1, "mean": {"accuracy": 0.5 + v / 100}} for v in range(15)
        ],
        "staleness_policy": {},
    }
    text = render_status(status)
    lines = text.splitlines()
    assert lines[0].split() == ["state", "training"]
    assert any(line.split() == ["mean_weight", "0.8125"] for line in lines)
    assert "clients:" in lines
    assert any(line.split()[:3] == ["c1", "cleveland", "7"] for line in lines)
    assert "metrics: (last 10 of 15)" in lines
    assert any("mean.accuracy" in line for line in lines)
    assert any(line.split()[:1] == ["14"] and "0.64" in line for line in lines)
    assert "staleness_policy: (none)" in lines


def test_output_modes_print_what_they_promise() -> None:
    from fl_client.output import Reporter

    streams = {mode: (io.StringIO(), io.StringIO()) for mode in ("human", "json", "quiet")}
    for mode, (out, err) in streams.items():
        reporter = Reporter(mode, out=out, err=err)  # type: ignore[arg-type]
        with reporter.bar(None, "pull", "B", unit_scale=True) as bar:
            bar.set_total(2048)
            bar.update(2048)
        reporter.event("update", round=1, bytes_per_param=8.0853)
    human_out, human_err = streams["human"]
    assert human_out.getvalue() == "[update] round=1 bytes_per_param=8.085\n"
    assert "pull" in human_err.getvalue()
    json_out, json_err = streams["json"]
    assert json_out.getvalue() == '{"bytes_per_param": 8.0853, "event": "update", "round": 1}\n'
    assert json_err.getvalue() == ""
    assert streams["quiet"][0].getvalue() == streams["quiet"][1].getvalue() == ""


def test_typed_events_render_as_the_same_lines_and_json() -> None:
    from fl_client.events import ClientWarning, Rejected, Stopped
    from fl_client.output import Reporter

    # Prepare
    events = [
        Rejected(update_id="u-1", code="too_stale", current_version=4),
        Stopped(reason="max_rounds", rounds=2),
        Stopped(
            reason="job_done",
            rounds=3,
            job_stop_reason="target_updates",
            final_version=9,
            final_metrics={"n_samples": 40, "loss": 0.5, "auroc": 0.75},
        ),
        ClientWarning("metrics for version 3 not reported: down"),
    ]
    streams = {mode: (io.StringIO(), io.StringIO()) for mode in ("human", "json")}

    # Execute
    for mode, (out, err) in streams.items():
        reporter = Reporter(mode, out=out, err=err)  # type: ignore[arg-type]
        for event in events:
            reporter.emit(event)

    # Assert
    assert streams["human"][0].getvalue().splitlines() == [
        "[rejected] update_id=u-1 code=too_stale current_version=4",
        "[stopped] reason=max_rounds rounds=2",
        "[stopped] reason=job_done rounds=3 job_stop_reason=target_updates final_version=9 "
        "final_metrics={n_samples=40, loss=0.5, auroc=0.75}",
    ]
    assert streams["human"][1].getvalue() == "warning: metrics for version 3 not reported: down\n"
    assert streams["json"][0].getvalue().splitlines() == [
        '{"code": "too_stale", "current_version": 4, "event": "rejected", "update_id": "u-1"}',
        '{"event": "stopped", "reason": "max_rounds", "rounds": 2}',
        '{"event": "stopped", "final_metrics": {"auroc": 0.75, "loss": 0.5, "n_samples": 40}, '
        '"final_version": 9, "job_stop_reason": "target_updates", "reason": "job_done", '
        '"rounds": 3}',
        '{"event": "warning", "message": "metrics for version 3 not reported: down"}',
    ]
    assert streams["json"][1].getvalue() == ""


def test_status_of_a_server_for_token_holders_without_enrolling_says_to_enroll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange: a server that refuses an anonymous status (fl_server's default), no credential
    def refuse(self: object, name: str | None = None) -> None:
        raise AccessTokenError("no access token was presented", status=401, code="token_missing")

    monkeypatch.setattr(ServerClient, "status", refuse)

    # Act
    code = main(["status", "--job", "icu", "--state-dir", str(tmp_path / "none")])

    # Assert: one line that says why and what to do, not the bare 401
    assert code != 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("hefl-client: ")
    assert "shows its status to token holders only" in line
    assert "hefl-client enroll" in line
