"""Settings from KEYAUTH_*, the refusal of placeholder keys off loopback, the package surface."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

import keyauth
from hefl_wire import is_loopback_host
from keyauth.app import create_app_from_env
from keyauth.errors import SettingsError, TokenError
from keyauth.settings import KeyauthSettings


def test_defaults_are_loopback_with_the_placeholder_key() -> None:
    settings = KeyauthSettings()

    assert settings.host == "127.0.0.1"
    assert settings.state_dir == Path("keyauth-state")
    assert settings.admin_key.get_secret_value() == "change-me"
    assert settings.admin_key_is_placeholder
    assert settings.profile == "n4096-s40"
    assert settings.access_token_ttl == 300
    assert settings.admin_token_ttl == 300
    assert settings.enrollment_redelivery_window == 600
    assert "change-me" not in repr(settings)


def test_settings_come_from_the_keyauth_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KEYAUTH_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("KEYAUTH_ACCESS_TOKEN_TTL", "60")
    monkeypatch.setenv("KEYAUTH_ADMIN_TOKEN_TTL", "30")
    monkeypatch.setenv("KEYAUTH_PROFILE", "n4096-s44")
    monkeypatch.setenv("KEYAUTH_HOST", "0.0.0.0")
    monkeypatch.setenv("KEYAUTH_ADMIN_KEY", "a-long-random-admin-key-1234")
    monkeypatch.setenv("KEYAUTH_ENROLLMENT_REDELIVERY_WINDOW", "0")

    settings = KeyauthSettings()

    assert settings.state_dir == tmp_path
    assert settings.access_token_ttl == 60
    assert settings.admin_token_ttl == 30
    assert settings.enrollment_redelivery_window == 0
    assert settings.profile == "n4096-s44"
    assert not settings.admin_key_is_placeholder


@pytest.mark.parametrize("key", ["change-me", "CHANGE-ME", "password", "hunter2-short"])
@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.7", "keyauth.example.org", "::"])
def test_placeholder_or_short_key_is_refused_off_loopback(key: str, host: str) -> None:
    with pytest.raises(ValidationError) as caught:
        # a raw string, as the environment gives it: the error must not echo it
        KeyauthSettings(host=host, admin_key=key)  # type: ignore[arg-type]

    assert "refusing to serve" in str(caught.value)
    assert key not in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]"])
def test_placeholder_key_is_fine_on_loopback(host: str) -> None:
    assert KeyauthSettings(host=host, admin_key=SecretStr("change-me")).host == host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("LOCALHOST", True), ("::1", True), ("0.0.0.0", False), ("", False)],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "values",
    [
        {"admin_key": "   "},
        {"profile": "n1-s1"},
        {"access_token_ttl": 0},
        {"admin_token_ttl": 9},
        {"admin_token_ttl": 3601},
        {"enrollment_token_ttl": 10, "enrollment_token_max_ttl": 5},
        {"max_body_bytes": 10},
        {"enrollment_redelivery_window": -1},
        {"enrollment_redelivery_window": 86_401},
        {"log_level": "CHATTY"},
        {"unknown_setting": 1},
    ],
)
def test_bad_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        KeyauthSettings(**values)  # type: ignore[arg-type]


def test_app_from_env_refuses_exposed_placeholder_without_printing_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYAUTH_HOST", "0.0.0.0")
    monkeypatch.setenv("KEYAUTH_ADMIN_KEY", "tooshort-key")

    with pytest.raises(SettingsError) as caught:
        create_app_from_env()

    assert "refusing to serve" in str(caught.value)
    assert "tooshort-key" not in str(caught.value)


def test_importing_and_building_the_app_creates_no_state(tmp_path: Path) -> None:
    # uvicorn looks ``app`` up at import; state is opened at startup, not before.
    code = (
        "import keyauth.app as m; from fastapi import FastAPI; "
        "assert isinstance(m.app, FastAPI); assert m.app is m.app; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "module",
    [
        "keyauth",
        "errors",
        "settings",
        "tokens",
        "store",
        "service",
        "schemas",
        "deps",
        "routes",
        "app",
    ],
)
def test_every_public_name_exists(module: str) -> None:
    imported = importlib.import_module(module if module == "keyauth" else f"keyauth.{module}")

    public = imported.__all__

    assert len(set(public)) == len(public)
    assert [name for name in public if not hasattr(imported, name)] == []


def test_package_exports_the_token_verifier_for_the_server() -> None:
    assert {"TokenVerifier", "AccessClaims", "TokenError", "KeyauthSettings"} <= set(
        keyauth.__all__
    )
    assert keyauth.TokenError is TokenError
