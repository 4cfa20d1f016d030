"""A job in training under real uvicorn: keyauth, fl_server and one enrolled party."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import crypto
from harness.parties import (
    TEST_PROFILE,
    Party,
    Values,
    enroll,
    make_layout,
    random_blocks,
    start_job,
)
from harness.services import ServiceProcess, keyauth_service, new_admin_key, server_service

__all__ = ["LiveJob", "live_job"]


@dataclass(frozen=True)
class LiveJob:
    """Both services, the administrator's key, and the party that started the job."""

    admin_key: str
    keyauth: ServiceProcess
    server: ServiceProcess
    party: Party
    layout: crypto.ModelLayout
    initial: Values


@contextmanager
def live_job(
    work: Path, name: str, *, n_params: int, seed: int, admin_key: str | None = None
) -> Iterator[LiveJob]:
    """Start keyauth (``TEST_PROFILE``) and an unthrottled fl_server, enroll ``name``, and
    start a job of ``n_params`` parameters from ``random_blocks(..., seed)``."""
    admin = admin_key or new_admin_key()
    with (
        keyauth_service(
            work / "keyauth", admin, work / "keyauth.log", profile=TEST_PROFILE
        ) as keyauth,
        server_service(
            keyauth.url, work / "server", work / "server.log", client_updates_per_minute="0"
        ) as server,
    ):
        party = enroll(keyauth.url, admin, name)
        layout = make_layout(n_params, party.profile)
        initial = random_blocks(layout, party.profile, seed)
        start_job(server.url, party, layout, initial)
        yield LiveJob(admin, keyauth, server, party, layout, initial)
