"""Helpers shared by the keyauth tests (a uniquely named module: ``conftest`` is not importable)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from keyauth.settings import KeyauthSettings

ADMIN_KEY = "test-admin-key-0123456789abcdef"
TEST_PROFILE = "test-n2048"


class FakeClock:
    """Seconds since the epoch that move only when a test says so.

    It starts at the real time: PyJWT checks ``exp`` and ``iat`` against the real clock.
    """

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_settings(state_dir: Path, **overrides: Any) -> KeyauthSettings:
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "admin_key": ADMIN_KEY,
        "profile": TEST_PROFILE,
    }
    values.update(overrides)
    return KeyauthSettings(**values)


@asynccontextmanager
async def started(
    app: FastAPI, base_url: str = "http://127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on ``app`` with its lifespan running (startup opens the state)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client
