"""Real ``hefl-client train`` processes ride out kill -9 of the server by themselves.

``harness.server_crash.crash_server`` drives the server with a resend loop; this runs the
product's own client (pull, train, encrypt, push, retries and its pending-update journal)
on the heart-disease hospitals while the server is killed twice and restarted on the same
port. Every client must finish its rounds and exit 0 with nobody's help, and the server
must have applied exactly the updates the clients were told it applied.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import crypto
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.enrollment import client_command, enroll_hospital
from harness.services import (
    ServiceError,
    ServiceProcess,
    keyauth_service,
    new_admin_key,
    server_service,
)
from harness.studies import study_json

pytestmark = pytest.mark.e2e

SITES = ("cleveland", "hungary", "switzerland")
ROUNDS = 10
KILL_AT = (4, 14)  # kill -9 once the server has applied this many updates
JOB = "heart"


def applied(server: ServiceProcess, viewer: str) -> int | None:
    try:
        status = read_status(server.url, viewer, JOB, timeout=2)
    except (httpx.TransportError, ServiceError):  # down, or starting
        return None
    count: int = status["updates_applied"]
    return count


def events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_hefl_clients_recover_by_themselves_when_the_server_is_killed(tmp_path: Path) -> None:
    # Prepare
    admin_key = new_admin_key()
    with (
        keyauth_service(tmp_path / "keyauth", admin_key, tmp_path / "keyauth.log") as keyauth,
        server_service(
            keyauth.url,
            tmp_path / "server",
            tmp_path / "server.log",
            client_updates_per_minute="0",
            checkpoint_every="3",
        ) as server,
    ):
        # The bundled heart-disease hospitals: 13 encoded features from a data factory.
        spec = study_json(JOB, profile=crypto.DEFAULT_PROFILE.name, inputs=13)
        create_job(server.url, admin_token(keyauth.url, admin_key), spec)
        viewer = viewer_token(keyauth.url, admin_key)
        for site in SITES:
            enroll_hospital(keyauth.url, admin_key, site, tmp_path / site)
        clients: dict[str, subprocess.Popen[bytes]] = {}
        for site in SITES:
            command = client_command(
                "train",
                "--job",
                JOB,
                "--server",
                server.url,
                "--data",
                "heart-disease",
                "--site",
                site,
                "--state-dir",
                str(tmp_path / site),
                "--max-rounds",
                str(ROUNDS),
                "--step-delay",
                "0.01",
                "--max-attempts",
                "12",
                "--json",
            )
            with (
                (tmp_path / f"{site}.jsonl").open("wb") as out,
                (tmp_path / f"{site}.err").open("wb") as err,
            ):
                clients[site] = subprocess.Popen(command, stdout=out, stderr=err)

        # Execute: kill -9 the server twice mid-training; restart it on the same port.
        killed_with_clients_running = 0
        deadline = time.monotonic() + 240
        for threshold in KILL_AT:
            while (applied(server, viewer) or 0) < threshold:
                assert time.monotonic() < deadline, "training stalled before the kill"
                time.sleep(0.05)
            killed_with_clients_running += any(p.poll() is None for p in clients.values())
            server.kill()
            time.sleep(1.0)  # the clients meet a dead port, then a starting server
            server.start()
        returncodes = {}
        for site, process in clients.items():
            returncodes[site] = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        final = read_status(server.url, viewer, JOB, timeout=5)

    # Assert
    stderr = {site: (tmp_path / f"{site}.err").read_text()[-2000:] for site in SITES}
    assert returncodes == dict.fromkeys(SITES, 0), stderr
    assert killed_with_clients_running == len(KILL_AT)
    # The clients did meet a dead or restarting server, and retried by themselves.
    retries = sum((tmp_path / f"{site}.err").read_text().count("; retry ") for site in SITES)
    assert retries > 0
    acknowledged = {
        site: {e["update_id"] for e in events(tmp_path / f"{site}.jsonl") if e["event"] == "update"}
        for site in SITES
    }
    assert {site: len(ids) for site, ids in acknowledged.items()} == dict.fromkeys(SITES, ROUNDS)
    # Exactly once: the server applied one update per acknowledged id, per client.
    assert final["updates_applied"] == len(SITES) * ROUNDS
    by_name = {c["client_name"]: c["updates_applied"] for c in final["clients"].values()}
    assert by_name == dict.fromkeys(SITES, ROUNDS)
