"""The administrator at fl_server: an admin access token, and jobs created from study specs."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from harness.services import ServiceError

__all__ = ["admin_token", "create_job"]


def admin_token(keyauth_url: str, admin_key: str, *, verify: ssl.SSLContext | bool = True) -> str:
    """An administrator access token (``role="admin"``) that fl_server accepts: what
    keyauth issues for its admin key (``POST /v1/admin/token``)."""
    answer = httpx.post(
        f"{keyauth_url}/v1/admin/token",
        headers={"X-Admin-Key": admin_key},
        timeout=10,
        verify=verify,
    )
    if answer.status_code != 200:
        raise ServiceError(f"admin token: {answer.status_code} {answer.text}")
    token: str = answer.json()["access_token"]
    return token


def create_job(
    server_url: str, token: str, spec_json: str, *, verify: ssl.SSLContext | bool = True
) -> dict[str, Any]:
    """``POST /v1/jobs``: the job of ``spec_json`` (created, or found with the same spec)."""
    answer = httpx.post(
        f"{server_url}/v1/jobs",
        content=spec_json.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
        verify=verify,
    )
    if answer.status_code not in (200, 201):
        raise ServiceError(f"creating a job: {answer.status_code} {answer.text}")
    job: dict[str, Any] = answer.json()
    return job
