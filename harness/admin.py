"""The administrator at fl_server: admin and viewer tokens, jobs from study specs, the status."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from typing import Any

import httpx

from harness.services import ServiceError

__all__ = ["admin_token", "create_job", "read_status", "run_admin", "viewer_token"]


def admin_token(keyauth_url: str, admin_key: str, *, verify: ssl.SSLContext | bool = True) -> str:
    """An administrator access token (``role="admin"``) that fl_server accepts: what
    keyauth issues for its admin key (``POST /v1/admin/token``)."""
    return _token_for_admin_key(keyauth_url, "admin", admin_key, verify)


def viewer_token(keyauth_url: str, admin_key: str, *, verify: ssl.SSLContext | bool = True) -> str:
    """A viewer access token (``role="viewer"``): it reads fl_server's status and nothing
    else (``POST /v1/viewer/token``)."""
    return _token_for_admin_key(keyauth_url, "viewer", admin_key, verify)


def _token_for_admin_key(
    keyauth_url: str, role: str, admin_key: str, verify: ssl.SSLContext | bool
) -> str:
    answer = httpx.post(
        f"{keyauth_url}/v1/{role}/token",
        headers={"X-Admin-Key": admin_key},
        timeout=10,
        verify=verify,
    )
    if answer.status_code != 200:
        raise ServiceError(f"{role} token: {answer.status_code} {answer.text}")
    token: str = answer.json()["access_token"]
    return token


def read_status(
    server_url: str,
    token: str,
    job: str | None = None,
    *,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """``GET /v1/jobs/{job}/status`` (or ``GET /v1/status`` without ``job``) with ``token``:
    a viewer, administrator or client token (the status is not public by default).

    Raises
    ------
    ServiceError
        The server answered anything but 200 (the answer in the error).
    httpx.TransportError
        The server did not answer.
    """
    path = f"/v1/jobs/{job}/status" if job is not None else "/v1/status"
    answer = httpx.get(
        f"{server_url}{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
        verify=verify,
    )
    if answer.status_code != 200:
        raise ServiceError(f"status: {answer.status_code} {answer.text}")
    status: dict[str, Any] = answer.json()
    return status


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


def run_admin(keyauth_url: str, server_url: str, admin_key: str, *args: str) -> str:
    """``hefl-admin ARGS`` as the administrator runs it (``job create SPEC.toml``, ...): the
    admin key in its environment, never on its command line. What it printed.

    Raises
    ------
    ServiceError
        It exited non-zero (its message in the error).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTH_")}
    env["KEYAUTH_ADMIN_KEY"] = admin_key
    urls = ["--url", keyauth_url, "--server-url", server_url]
    done = subprocess.run(  # noqa: S603 - our own CLI, its arguments from the caller
        [sys.executable, "-m", "hefl_admin", *urls, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ServiceError(f"hefl-admin {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout
