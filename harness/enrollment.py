"""Enrolling hospitals as an operator does: the administrator's token, then ``hefl-client``."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from harness.services import ServiceError, Tls, child_environ

__all__ = ["client_command", "enroll_hospital", "enrollment_token"]


def enrollment_token(
    keyauth_url: str, admin_key: str, client_name: str, *, verify: ssl.SSLContext | bool = True
) -> str:
    """Issue a single-use enrollment token for ``client_name`` (the administrator's step)."""
    answer = httpx.post(
        f"{keyauth_url}/v1/enrollment-tokens",
        headers={"X-Admin-Key": admin_key},
        json={"client_name": client_name, "expires_in": 900},
        timeout=10,
        verify=verify,
    )
    if answer.status_code != 201:
        raise ServiceError(
            f"enrollment token for {client_name}: {answer.status_code} {answer.text}"
        )
    token: str = answer.json()["token"]
    return token


def client_command(*args: str) -> list[str]:
    """``python -m fl_client ARGS`` with this interpreter (the ``hefl-client`` CLI)."""
    return [sys.executable, "-m", "fl_client", *args]


def enroll_hospital(
    keyauth_url: str, admin_key: str, name: str, state_dir: Path, *, tls: Tls | None = None
) -> None:
    """The administrator issues a token for ``name``; ``hefl-client enroll`` redeems it.

    The token goes through stdin, never a command line other users could read.
    """
    verify: ssl.SSLContext | bool = tls.client_context() if tls else True
    token = enrollment_token(keyauth_url, admin_key, name, verify=verify)
    env = child_environ(tls)
    command = ["enroll", "--keyauth", keyauth_url, "--token", "-", "--state-dir", str(state_dir)]
    answer = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        client_command(*command, "--quiet"),
        input=token.encode(),
        capture_output=True,
        timeout=120,
        env=env,
        check=False,
    )
    if answer.returncode != 0:
        raise ServiceError(f"enrolling {name} failed: {answer.stderr.decode()[-2000:]}")
