"""An HTTP client for the fl_server tests: the ASGI app with jobs, tokens and problems."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from fl_server.app import create_app
from fl_server.job_service import JobService
from fl_server.material import KeyauthMaterial
from fl_server.service import ServerService
from tests.fl_server.helpers import (
    JOB,
    Hospital,
    admin_token,
    make_settings,
    mint_token,
    spec_body,
    split_overrides,
)

PROBLEM = "application/problem+json"


class Api:
    """An HTTP client on a started app, with one hospital's token and the administrator's."""

    def __init__(self, http: httpx.AsyncClient, token: str, admin: str, app: FastAPI) -> None:
        self.http = http
        self.token = token
        self.admin = admin
        self.app = app
        self.job = JOB

    @property
    def service(self) -> JobService:
        server: ServerService = self.app.state.service
        return server.job(self.job)

    def at(self, suffix: str = "", job: str | None = None) -> str:
        """The path of this api's job (or ``job``), then ``suffix``."""
        return f"/v1/jobs/{job or self.job}{suffix}"

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def as_admin(self) -> dict[str, str]:
        return self.auth(self.admin)

    async def create_job(self, name: str = JOB, **job: Any) -> httpx.Response:
        return await self.http.post(
            "/v1/jobs", content=spec_body(name, **job), headers=self.as_admin()
        )

    async def start_job(
        self, hospital: Hospital, values: np.ndarray[Any, Any], job: str | None = None
    ) -> None:
        response = await self.http.put(
            self.at("/layout", job), content=hospital.layout.to_json(), headers=self.auth()
        )
        assert response.status_code == 201, response.text
        response = await self.http.put(
            self.at("/initial-model", job),
            content=hospital.initial_model(values),
            headers=self.auth(),
        )
        assert response.status_code == 201, response.text

    async def push(
        self, envelope: bytes, token: str | None = None, job: str | None = None
    ) -> httpx.Response:
        return await self.http.post(
            self.at("/updates", job),
            content=envelope,
            headers={**self.auth(token), "Content-Type": "application/octet-stream"},
        )

    async def model(self, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(), **kwargs.pop("headers", {})}
        return await self.http.get(self.at("/model"), headers=headers, **kwargs)

    async def status(self, job: str | None = None) -> dict[str, Any]:
        answer = await self.http.get(self.at("/status", job), headers=self.as_admin())
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


async def open_api(
    tmp_path: Path,
    material: KeyauthMaterial,
    signing_key: Ed25519PrivateKey,
    *,
    clock: Callable[[], float] = time.time,
    create: bool = True,
    **overrides: Any,
) -> AsyncIterator[Api]:
    """An app on ``material``, with job ``JOB`` created from a spec (unless ``create`` is
    false); ``overrides`` are process settings or the spec's ``[server]`` and ``[stop]``."""
    settings, job = split_overrides(overrides)
    app = create_app(
        make_settings(tmp_path / "state", **settings), keyauth_material=material, clock=clock
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as http:
            api = Api(http, mint_token(signing_key), admin_token(signing_key), app)
            if create:
                created = await api.create_job(**job)
                assert created.status_code == 201, created.text
            yield api


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["detail"]
    return body
