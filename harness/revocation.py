"""Revocation: how long a revoked hospital's token still works at fl_server, measured."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from harness.parties import Party, job_url

__all__ = ["Revocation", "revoke_and_time"]


@dataclass(frozen=True)
class Revocation:
    """One revocation as the hospital met it.

    ``delay`` is the time from keyauth's answer to the ``DELETE`` to fl_server's first
    refusal of the hospital's token; ``refusal`` is that answer's status and code, and
    ``asks`` the downloads tried meanwhile (each one served the model until the refusal).
    """

    delay: float
    refusal: tuple[int, str]
    asks: int


def revoke_and_time(
    keyauth_url: str,
    admin_key: str,
    server_url: str,
    job: str,
    party: Party,
    *,
    every: float = 0.01,
    timeout: float = 10.0,
) -> Revocation:
    """Revoke ``party`` at keyauth, then download job ``job``'s model with its token every
    ``every`` seconds until fl_server refuses it.

    Raises
    ------
    AssertionError
        keyauth did not revoke, a download failed otherwise, or no refusal came within
        ``timeout`` seconds.
    """
    with httpx.Client(timeout=10) as http:
        served = http.get(job_url(server_url, job, "/model"), headers=party.auth)
        assert served.status_code == 200, served.text
        revoked = http.delete(
            f"{keyauth_url}/v1/clients/{party.client_id}", headers={"X-Admin-Key": admin_key}
        )
        answered = time.monotonic()
        assert revoked.status_code == 204, revoked.text
        asks = 0
        while True:
            # Conditional: the hospital has the model, so only the answer's status travels.
            answer = http.get(
                job_url(server_url, job, "/model"),
                headers={**party.auth, "If-None-Match": served.headers["ETag"]},
            )
            refused_at = time.monotonic()
            asks += 1
            if answer.status_code not in (200, 304):
                return Revocation(
                    refused_at - answered, (answer.status_code, answer.json()["code"]), asks
                )
            assert refused_at - answered < timeout, f"still served {timeout:.0f} s after"
            time.sleep(every)
