"""A job in training under real uvicorn: keyauth, fl_server, the admin's job and one party."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import crypto
from harness.admin import admin_token, create_job
from harness.parties import (
    TEST_PROFILE,
    Party,
    Values,
    enroll,
    job_url,
    make_layout,
    random_blocks,
    start_job,
)
from harness.services import ServiceProcess, keyauth_service, new_admin_key, server_service
from harness.studies import study_json

__all__ = ["LiveJob", "live_job"]


@dataclass(frozen=True)
class LiveJob:
    """Both services, the administrator's key and token, the job, and the party that
    started it."""

    admin_key: str
    admin_token: str
    keyauth: ServiceProcess
    server: ServiceProcess
    job: str
    party: Party
    layout: crypto.ModelLayout
    initial: Values

    def url(self, suffix: str = "") -> str:
        """The URL of the job, then ``suffix`` (``/model``, ``/updates``, ...)."""
        return job_url(self.server.url, self.job, suffix)


@contextmanager
def live_job(
    work: Path,
    name: str,
    *,
    n_params: int,
    seed: int,
    admin_key: str | None = None,
    job: str = "live",
) -> Iterator[LiveJob]:
    """Start keyauth (``TEST_PROFILE``) and an unthrottled fl_server, have the administrator
    create job ``job``, enroll ``name``, and start the job with a model of ``n_params``
    parameters from ``random_blocks(..., seed)``."""
    admin = admin_key or new_admin_key()
    with (
        keyauth_service(
            work / "keyauth", admin, work / "keyauth.log", profile=TEST_PROFILE
        ) as keyauth,
        server_service(
            keyauth.url, work / "server", work / "server.log", client_updates_per_minute="0"
        ) as server,
    ):
        token = admin_token(keyauth.url, admin)
        create_job(server.url, token, study_json(job, profile=TEST_PROFILE))
        party = enroll(keyauth.url, admin, name)
        layout = make_layout(n_params, party.profile)
        initial = random_blocks(layout, party.profile, seed)
        start_job(server.url, job, party, layout, initial)
        yield LiveJob(admin, token, keyauth, server, job, party, layout, initial)
