"""Fixtures for keyauth tests: explicit settings over a temporary state dir, a fake clock."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from keyauth.app import create_app
from keyauth.service import KeyAuthority
from keyauth.settings import KeyauthSettings
from keyauth.store import InMemoryStore
from tests.keyauth.keyauth_helpers import FakeClock, make_settings, started


@pytest.fixture(autouse=True)
def _no_keyauth_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read KEYAUTH_* from the environment: the runner's must not leak into tests.
    for name in list(os.environ):
        if name.startswith("KEYAUTH_"):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> KeyauthSettings:
    return make_settings(tmp_path / "state")


@pytest.fixture
def authority(settings: KeyauthSettings, clock: FakeClock) -> Iterator[KeyAuthority]:
    store = InMemoryStore()
    yield KeyAuthority(settings, store, clock=clock)
    store.close()


@pytest.fixture
def app(settings: KeyauthSettings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with started(app) as client:
        yield client
