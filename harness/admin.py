"""The administrator at fl_server: an admin access token, and jobs created from study specs."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from harness.services import ServiceError
from keyauth.tokens import TokenSigner, signing_key_from_pem

__all__ = ["admin_token", "create_job"]


def admin_token(
    keyauth_url: str,
    admin_key: str,
    keyauth_state_dir: Path,
    *,
    verify: ssl.SSLContext | bool = True,
) -> str:
    """An administrator access token (``role="admin"``) that fl_server accepts.

    keyauth issues it (``POST /v1/admin/token`` with the admin key). A keyauth without
    that endpoint yet (404, 405) gets one minted here with its own signing key, read from
    its state directory: the same token it would sign (``sub`` and ``name`` "admin").
    """
    answer = httpx.post(
        f"{keyauth_url}/v1/admin/token",
        headers={"X-Admin-Key": admin_key},
        timeout=10,
        verify=verify,
    )
    if answer.status_code == 200:
        token: str = answer.json()["access_token"]
        return token
    if answer.status_code not in (404, 405):
        raise ServiceError(f"admin token: {answer.status_code} {answer.text}")
    pem = (keyauth_state_dir / "signing-key.pem").read_bytes()
    signer = TokenSigner(signing_key_from_pem(pem), lifetime=3600)
    return signer.issue(client_id="admin", client_name="admin", key_epoch=1, role="admin").token


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
