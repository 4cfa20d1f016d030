"""Two requests per update: POST …/leases (slot + model) and X-Hefl-Metrics on an update."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.material import KeyauthMaterial
from tests.fl_server.api import Api, assert_problem, open_api
from tests.fl_server.helpers import Hospital, mint_token, wait_published

pytestmark = pytest.mark.anyio

REPORT = {"version": 0, "metrics": {"loss": 0.7, "accuracy": 0.6, "n_samples": 50}}


def _header(report: object = REPORT) -> dict[str, str]:
    return {"X-Hefl-Metrics": json.dumps(report, separators=(",", ":"))}


async def _push(api: Api, envelope: bytes, headers: dict[str, str]) -> httpx.Response:
    return await api.http.post(
        api.at("/updates"),
        content=envelope,
        headers={**api.auth(), "Content-Type": "application/octet-stream", **headers},
    )


def _limits(hospital: Hospital) -> crypto.EnvelopeLimits:
    return crypto.EnvelopeLimits(
        n_blocks=hospital.layout.n_blocks,
        max_block_bytes=hospital.profile.max_block_bytes,
        expected_fingerprint=hospital.layout.fingerprint,
    )


async def test_a_lease_is_a_slot_and_the_model_in_one_answer(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    async for api in open_api(tmp_path, material, signing_key, max_training=1, slot_ttl=120):
        leases = api.at("/leases")
        assert_problem(await api.http.post(leases, headers=api.auth()), 409, "job_not_started")
        await api.start_job(hospital, hospital.random_values(0))
        other = mint_token(signing_key, "client-b")

        # Execute: a lease, a renewal that asks for what changed since version 0, another
        # client while the slot is held, a version from the future
        lease = await api.http.post(leases, headers=api.auth())
        renewed = await api.http.post(leases, params={"since": 0}, headers=api.auth())
        full = await api.http.post(leases, headers=api.auth(other))
        ahead = await api.http.post(leases, params={"since": 5}, headers=api.auth())

        # Assert: the whole model with the job's state, version and lease; nothing
        # changed since 0 is an envelope with no block; the slot is the slot path's
        assert lease.status_code == 200
        assert lease.headers["content-type"] == "application/octet-stream"
        assert lease.headers["X-Hefl-Model-Version"] == "0"
        assert lease.headers["X-Hefl-Job-State"] == "training"
        assert lease.headers["X-Hefl-Job-Version"] == "0"
        assert lease.headers["Cache-Control"] == "no-store"
        assert lease.headers["ETag"] == (await api.model()).headers["ETag"]
        model = crypto.model_from_bytes(lease.content, _limits(hospital))
        assert (model.version, len(model.blocks)) == (0, hospital.layout.n_blocks)
        assert renewed.status_code == 200
        assert renewed.headers["X-Hefl-Lease-Expires"] >= lease.headers["X-Hefl-Lease-Expires"]
        assert crypto.model_from_bytes(renewed.content, _limits(hospital)).blocks == ()
        assert_problem(full, 429, "slots_full")
        assert 1 <= int(full.headers["Retry-After"]) <= 120
        assert_problem(ahead, 409, "version_ahead")
        slot = await api.http.post(api.at("/slots"), headers=api.auth(other))
        assert_problem(slot, 429, "slots_full")

        # An applied update gives the lease back; the next lease answers what changed.
        _, envelope = hospital.update(hospital.random_values(1), base_version=0, indices=[0])
        assert (await api.push(envelope)).status_code == 202
        wait_published(api.service)  # the worker publishes after the 202
        theirs = await api.http.post(leases, params={"since": 0}, headers=api.auth(other))
        assert theirs.status_code == 200
        assert theirs.headers["X-Hefl-Job-Version"] == "1"
        changed = crypto.model_from_bytes(theirs.content, _limits(hospital))
        assert [b.index for b in changed.blocks] == [0]


async def test_a_lease_is_refused_as_a_slot_is(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    async for api in open_api(tmp_path, material, signing_key):
        await api.start_job(hospital, hospital.random_values(0))
        uid, envelope = hospital.update(hospital.random_values(1), base_version=0)
        assert (await api.push(envelope)).status_code == 202
        leases = api.at("/leases")

        # a quarantined client (its update removed by the administrator)
        repair = await api.http.post(
            api.at("/repairs"), json={"update_ids": [str(uid)]}, headers=api.as_admin()
        )
        assert repair.status_code == 200, repair.text
        assert_problem(await api.http.post(leases, headers=api.auth()), 403, "client_quarantined")
        assert_problem(
            await api.http.post(api.at("/slots"), headers=api.auth()), 403, "client_quarantined"
        )
        other = api.auth(mint_token(signing_key, "client-b"))
        assert (await api.http.post(leases, headers=other)).status_code == 200

        # paused, then done
        assert (await api.http.post(api.at("/pause"), headers=api.as_admin())).status_code == 200
        assert_problem(await api.http.post(leases, headers=other), 409, "job_paused")
        assert (await api.http.post(api.at("/stop"), headers=api.as_admin())).status_code == 200
        assert_problem(await api.http.post(leases, headers=other), 409, "job_not_training")
        # an administrator's token is no client's
        assert_problem(await api.http.post(leases, headers=api.as_admin()), 403, "token_wrong_role")


async def test_metrics_that_come_with_an_update_are_kept_once_and_durably(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    _, envelope = hospital.update(hospital.random_values(1), base_version=0)
    async for api in open_api(tmp_path, material, signing_key):
        await api.start_job(hospital, hospital.random_values(0))

        # Execute: the update with its report, then the same update resent twice
        first = await _push(api, envelope, _header())
        again = await _push(api, envelope, _header())
        status = await api.status()

        # Assert: the report counts once, on the version the client evaluated
        assert first.status_code == 202, first.text
        assert (again.status_code, again.json()["duplicate"]) == (202, True)
        assert [(m["version"], m["reports"]) for m in status["metrics"]] == [(0, 1)]
        assert status["metrics"][0]["clients"] == {"client-a": {"accuracy": 0.6, "loss": 0.7}}
        assert status["clients"]["client-a"]["metrics_reports"] == 1
        assert status["pooled_metrics"]["accuracy"]["value"] == 0.6

    # After a restart the report is there, and a resend still does not count it again.
    async for api in open_api(tmp_path, material, signing_key, create=False):
        resent = await _push(api, envelope, _header())
        status = await api.status()
        assert (resent.status_code, resent.json()["duplicate"]) == (202, True)
        assert [(m["version"], m["reports"]) for m in status["metrics"]] == [(0, 1)]


async def test_a_refused_report_refuses_its_update_and_a_refused_update_keeps_no_report(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    async for api in open_api(tmp_path, material, signing_key, max_staleness=1):
        await api.start_job(hospital, hospital.random_values(0))
        await _refusals(api, hospital)


async def _refusals(api: Api, hospital: Hospital) -> None:
    _, envelope = hospital.update(hospital.random_values(1), base_version=0)
    bad = {
        "not json": "{",
        "no metrics": '{"version":0,"metrics":{}}',
        "beyond the bound": '{"version":0,"metrics":{"loss":1e13}}',
        "NaN": '{"version":0,"metrics":{"loss":NaN}}',
        "too long": json.dumps({"version": 0, "metrics": {"loss": 0.5, "pad": "x" * 4096}}),
    }

    # Execute + Assert: each is the metrics path's 422, and the update is not applied
    for what, header in bad.items():
        answer = await _push(api, envelope, {"X-Hefl-Metrics": header})
        assert_problem(answer, 422, "metrics_invalid"), what
    ahead = await _push(api, envelope, _header({"version": 7, "metrics": {"loss": 1}}))
    assert_problem(ahead, 409, "version_ahead")
    status = await api.status()
    assert (status["version"], status["metrics"]) == (0, [])

    # An update refused (too stale) keeps no report either.
    for base in range(2):
        _, fresh = hospital.update(hospital.random_values(base + 2), base_version=base)
        assert (await api.push(fresh)).status_code == 202
    _, stale = hospital.update(hospital.random_values(9), base_version=0)
    refused = await _push(api, stale, _header())
    assert_problem(refused, 409, "too_stale")
    assert (await api.status())["metrics"] == []
