"""Fixtures for the hostile tests: no service settings leak in from the environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_service_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("KEYAUTH_", "FLSERVER_", "FLCLIENT_")):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
