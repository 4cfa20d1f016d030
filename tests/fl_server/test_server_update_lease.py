"""One request per update: POST …/updates?lease=next answers with the next lease and model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.material import KeyauthMaterial
from tests.fl_server.api import Api, assert_problem, open_api
from tests.fl_server.helpers import Hospital, mint_token

pytestmark = pytest.mark.anyio

OCTETS = "application/octet-stream"


async def _push(api: Api, envelope: bytes, **params: Any) -> httpx.Response:
    return await api.http.post(
        api.at("/updates"),
        params=params,
        content=envelope,
        headers={**api.auth(), "Content-Type": OCTETS},
    )


def _model(hospital: Hospital, answer: httpx.Response) -> crypto.EncryptedModel:
    limits = crypto.EnvelopeLimits(
        n_blocks=hospital.layout.n_blocks,
        max_block_bytes=hospital.profile.max_block_bytes,
        expected_fingerprint=hospital.layout.fingerprint,
    )
    return crypto.model_from_bytes(answer.content, limits)


async def _leased_with_an_update(
    api: Api, hospital: Hospital, signing_key: Ed25519PrivateKey
) -> tuple[str, bytes]:
    """A started job whose one slot this client leased, another client's token, and this
    client's update on version 0."""
    await api.start_job(hospital, hospital.random_values(0))
    assert (await api.http.post(api.at("/leases"), headers=api.auth())).status_code == 200
    _, envelope = hospital.update(hospital.random_values(1), base_version=0, indices=[0])
    return mint_token(signing_key, "client-b"), envelope


async def test_an_update_that_asks_for_the_next_lease_is_answered_with_it(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    async for api in open_api(tmp_path, material, signing_key, max_training=1, slot_ttl=120):
        other, envelope = await _leased_with_an_update(api, hospital, signing_key)

        # Execute: the update asks for the next lease and the blocks changed since 0; then
        # another client asks for a slot; then the update is sent again
        answer = await _push(api, envelope, lease="next", since=0)
        full = await api.http.post(api.at("/slots"), headers=api.auth(other))
        resent = await _push(api, envelope, lease="next", since=1)

        # Assert: the model of version 1 (the update's block), the lease as POST …/leases
        # answers it, the receipt in a header; the slot is still this client's
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == OCTETS
        assert answer.headers["X-Hefl-Model-Version"] == "1"
        assert answer.headers["X-Hefl-Job-State"] == "training"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Hefl-Lease-Expires"]
        assert answer.headers["ETag"] == (await api.model()).headers["ETag"]
        model = _model(hospital, answer)
        assert (model.version, [b.index for b in model.blocks]) == (1, [0])
        receipt = json.loads(answer.headers["X-Hefl-Update-Receipt"])
        assert receipt["version"] == 1
        assert receipt["duplicate"] is False
        assert_problem(full, 429, "slots_full")
        # the resend is acknowledged as a duplicate, and leases too (nothing changed since 1)
        assert resent.status_code == 200, resent.text
        assert json.loads(resent.headers["X-Hefl-Update-Receipt"]) == {**receipt, "duplicate": True}
        assert _model(hospital, resent).blocks == ()
        status = await api.status()
        assert (status["updates_applied"], status["duplicates"]) == (1, 1)


async def test_without_the_parameter_an_update_is_answered_as_before(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    async for api in open_api(tmp_path, material, signing_key, max_training=1, slot_ttl=120):
        other, envelope = await _leased_with_an_update(api, hospital, signing_key)

        answer = await _push(api, envelope)
        slot = await api.http.post(api.at("/slots"), headers=api.auth(other))

        assert answer.status_code == 202
        assert answer.json()["version"] == 1
        assert "X-Hefl-Update-Receipt" not in answer.headers
        assert slot.status_code == 200  # the applied update gave the slot back


@pytest.mark.parametrize(
    ("overrides", "since"),
    [
        ({"buffer_size": 2}, 0),  # FedBuff: the update publishes no version of its own
        ({"policy": "rounds", "round_clients": 2}, 0),  # rounds: nor does a round's update
        ({"target_updates": 1}, 0),  # the update ends the job: no next round
        ({}, 7),  # since ahead of the model: no lease, and the update stays applied
        ({"update_lease_wait": 0.0}, 0),  # no wait allowed for the publish
    ],
    ids=["fedbuff", "rounds", "job-done", "since-ahead", "no-wait"],
)
async def test_where_no_lease_follows_the_update_is_answered_202_and_the_slot_given_back(
    tmp_path: Path,
    material: KeyauthMaterial,
    signing_key: Ed25519PrivateKey,
    hospital: Hospital,
    overrides: dict[str, Any],
    since: int,
) -> None:
    async for api in open_api(
        tmp_path, material, signing_key, max_training=1, slot_ttl=120, **overrides
    ):
        other, envelope = await _leased_with_an_update(api, hospital, signing_key)

        answer = await _push(api, envelope, lease="next", since=since)
        slot = await api.http.post(api.at("/slots"), headers=api.auth(other))

        assert answer.status_code == 202, answer.text
        assert answer.json()["duplicate"] is False
        assert slot.status_code in (200, 409)  # 409: the job is done
        if slot.status_code == 409:
            assert_problem(slot, 409, "job_not_training")


async def test_a_refused_update_that_asked_for_a_lease_is_refused_as_before(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    async for api in open_api(tmp_path, material, signing_key):
        await api.start_job(hospital, hospital.random_values(0))
        _, envelope = hospital.update(hospital.random_values(1), base_version=3, indices=[0])

        answer = await _push(api, envelope, lease="next", since=0)
        odd = await _push(api, envelope, lease="later")

        assert_problem(answer, 409, "version_ahead")
        assert odd.status_code == 422
