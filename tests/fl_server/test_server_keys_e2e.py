"""keyauth and fl_server under real uvicorn: a job refused when keyauth's keys were replaced
(and resumed once they are restored), and a revocation in force within a second."""

from __future__ import annotations

import hashlib
import shutil
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import crypto
from harness.admin import admin_token, create_job, read_status, run_admin
from harness.parties import (
    TEST_PROFILE,
    Party,
    enroll,
    job_url,
    make_layout,
    random_blocks,
    start_job,
    update_envelope,
    wait_published,
)
from harness.revocation import revoke_and_time
from harness.services import ServiceProcess, keyauth_service, new_admin_key, server_service
from harness.studies import study_json

pytestmark = pytest.mark.e2e

# The bound: a revoked client is refused within a second of its revocation.
REVOCATION_BOUND = 1.0


@contextmanager
def services(
    work: Path, admin_key: str, keyauth_port: int | None = None
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """keyauth on ``work/keyauth`` (on ``keyauth_port`` if given) and fl_server on
    ``work/server`` with its default revocation refresh."""
    keyauth = keyauth_service(
        work / "keyauth", admin_key, work / "keyauth.log", profile=TEST_PROFILE
    )
    if keyauth_port is not None:
        keyauth.port = keyauth_port
    with (
        keyauth,
        server_service(
            keyauth.url, work / "server", work / "server.log", client_updates_per_minute="0"
        ) as server,
    ):
        yield keyauth, server


def train(
    server: ServiceProcess, job: str, party: Party, layout: crypto.ModelLayout, n: int
) -> int:
    """``n`` updates from ``party``, each on the version before; the version reached."""
    version = int(httpx.get(job_url(server.url, job), headers=party.auth).json()["version"])
    for _ in range(n):
        values = np.full((layout.n_blocks, party.profile.block_size), 1e-3)
        _, body = update_envelope(party, layout, values, version)
        answer = httpx.post(job_url(server.url, job, "/updates"), content=body, headers=party.auth)
        assert answer.status_code == 202, answer.text
        version = int(answer.json()["version"])
    wait_published(server.url, job, party, version)
    return version


def started_job(
    keyauth: ServiceProcess, server: ServiceProcess, admin_key: str, job: str, name: str
) -> tuple[dict[str, Any], Party, crypto.ModelLayout]:
    """Job ``job`` created by the administrator and started by hospital ``name``."""
    created = create_job(
        server.url, admin_token(keyauth.url, admin_key), study_json(job, profile=TEST_PROFILE)
    )
    party = enroll(keyauth.url, admin_key, name)
    layout = make_layout(3000, party.profile)
    start_job(server.url, job, party, layout, random_blocks(layout, party.profile, seed=1))
    return created, party, layout


def test_a_job_under_replaced_keys_is_refused_until_keyauth_is_restored(tmp_path: Path) -> None:
    # Prepare: keyauth with state A; a job trained a few updates.
    admin_key = new_admin_key()
    with services(tmp_path, admin_key) as (keyauth, server):
        port = keyauth.port
        created, party, layout = started_job(keyauth, server, admin_key, "old", "hospital-a")
        trained = train(server, "old", party, layout, 3)
    key_id_a = created["key_id"]
    # keyauth loses its state: the operator starts it afresh on the same port.
    shutil.move(tmp_path / "keyauth", tmp_path / "keyauth-backup")

    # Execute: both services restart; the old job is refused, a new job trains.
    with services(tmp_path, admin_key, port) as (keyauth, server):
        token = admin_token(keyauth.url, admin_key)
        status = read_status(server.url, token)
        shown = httpx.get(job_url(server.url, "old"), headers={"Authorization": f"Bearer {token}"})
        listed = run_admin(keyauth.url, server.url, admin_key, "job", "list")
        key_id_b = httpx.get(f"{keyauth.url}/v1/keys/key-id").json()["key_id"]
        fresh, newcomer, new_layout = started_job(keyauth, server, admin_key, "new", "hospital-b")
        fresh_version = train(server, "new", newcomer, new_layout, 2)

    # Assert: the refusal says what happened and what to do, everywhere the operator looks.
    assert (trained, fresh_version) == (3, 2)
    assert key_id_a == hashlib.sha256(party.secret_context).hexdigest()
    assert key_id_b != key_id_a
    assert [job["name"] for job in status["jobs"]] == []
    (failed,) = status["failed_jobs"]
    assert failed["name"] == "old"
    what = (
        f"keyauth's keys for key epoch 1 were replaced: key id {key_id_b}, "
        f"this job was created under {key_id_a}."
    )
    assert what in failed["error"]
    assert "restore keyauth's state directory from its backup" in failed["error"]
    assert "create a new job under another name" in failed["error"]
    assert (shown.status_code, shown.json()["code"]) == (500, "state_invalid")
    assert shown.json()["detail"] == failed["error"]
    assert what in " ".join(listed.split())
    assert fresh["key_id"] == key_id_b == hashlib.sha256(newcomer.secret_context).hexdigest()

    # Execute: the operator restores keyauth's state from the backup instead.
    shutil.move(tmp_path / "keyauth", tmp_path / "keyauth-replaced")
    shutil.move(tmp_path / "keyauth-backup", tmp_path / "keyauth")
    with services(tmp_path, admin_key, port) as (keyauth, server):
        restored = read_status(server.url, admin_token(keyauth.url, admin_key))
        party.token = httpx.post(
            f"{keyauth.url}/v1/token",
            json={"client_id": party.client_id, "client_secret": party.client_secret},
        ).json()["access_token"]
        resumed = train(server, "old", party, layout, 2)

    # Assert: the old job trains on; the job made under the replaced keys is refused now.
    assert [job["name"] for job in restored["jobs"]] == ["old"]
    assert [job["name"] for job in restored["failed_jobs"]] == ["new"]
    assert resumed == trained + 2


def test_a_revoked_hospital_is_refused_within_a_second(tmp_path: Path) -> None:
    # Prepare: a job in training, three hospitals to revoke one after another, one to keep.
    admin_key = new_admin_key()
    with services(tmp_path, admin_key) as (keyauth, server):
        _, keeper, _ = started_job(keyauth, server, admin_key, "live", "keeper")
        revoked = [enroll(keyauth.url, admin_key, f"hospital-{i}") for i in range(3)]

        # Execute: revoke each, downloading with its token until the server refuses it.
        timed = [
            revoke_and_time(keyauth.url, admin_key, server.url, "live", party) for party in revoked
        ]
        model = job_url(server.url, "live", "/model")
        anonymous = httpx.get(model)
        kept = httpx.get(model, headers=keeper.auth)
        later = [httpx.get(model, headers=party.auth) for party in revoked]

    # Assert: every refusal within the bound, as client_revoked; no download without a token.
    delays = [t.delay for t in timed]
    print(
        f"\nrevocation in force at fl_server after {', '.join(f'{d:.3f}' for d in delays)} s "
        f"(median {statistics.median(delays):.3f} s, max {max(delays):.3f} s, "
        f"bound {REVOCATION_BOUND} s, FLSERVER_REVOCATION_REFRESH 0.5 s)"
    )
    assert [t.refusal for t in timed] == [(403, "client_revoked")] * 3
    assert max(delays) < REVOCATION_BOUND
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "token_missing")
    assert kept.status_code == 200
    assert [(a.status_code, a.json()["code"]) for a in later] == [(403, "client_revoked")] * 3
