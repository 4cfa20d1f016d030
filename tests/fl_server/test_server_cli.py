import pytest

from fl_server.cli import main


def test_invalid_settings_exit_2_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLSERVER_MAX_TRAINING", "0")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "invalid FLSERVER_* settings: max_training" in err


def test_help_names_the_environment_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "FLSERVER_*" in capsys.readouterr().out
