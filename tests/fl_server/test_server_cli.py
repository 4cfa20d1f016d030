from pathlib import Path
from typing import Any

import pytest
import uvicorn

from fl_server.cli import main
from hefl_http.protocol import DeadlineH11Protocol


def test_invalid_settings_exit_2_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLSERVER_MAX_QUEUED_UPDATES", "0")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "invalid FLSERVER_* settings: max_queued_updates" in err


def test_help_names_the_environment_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "FLSERVER_*" in capsys.readouterr().out


def test_the_server_runs_under_uvicorn_with_request_deadlines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    monkeypatch.setenv("FLSERVER_STATE_DIR", str(tmp_path / "state"))

    assert main([]) == 0

    assert calls[0]["http"] is DeadlineH11Protocol
    assert (calls[0]["host"], calls[0]["ssl_certfile"]) == ("127.0.0.1", None)
