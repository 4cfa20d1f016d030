"""The integrity surface over HTTP: reports, probe downloads, repairs, quarantine, and 4xx for
every odd body a parser meets."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from tests.fl_server.api import Api, assert_problem
from tests.fl_server.helpers import Hospital, mint_token, spec_body

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def server(keys: crypto.KeyMaterial, profile: crypto.CkksProfile) -> crypto.ServerCipher:
    return crypto.ServerCipher(keys.public_context, profile)


@pytest.fixture
async def training(api: Api, hospital: Hospital) -> Api:
    await api.start_job(hospital, hospital.model_values(0, scale=0.3))
    return api


async def post_report(api: Api, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    return await api.http.post(api.at("/integrity"), json=body, headers=api.auth(token))


async def test_a_bad_version_is_searched_with_probe_downloads_and_repaired(
    training: Api, hospital: Hospital, server: crypto.ServerCipher, signing_key: Ed25519PrivateKey
) -> None:
    # Prepare: version 1 good, b's corrupted update makes version 2, a's honest one 3.
    api = training
    b = mint_token(signing_key, "client-b")
    await api.push(hospital.update(hospital.model_values(1), base_version=0)[1])
    assert (await post_report(api, {"version": 1, "ok": True})).json() == {"state": "healthy"}
    bad_id, bad = hospital.corrupted_update(
        hospital.model_values(2), base_version=1, corruption="flip", server=server
    )
    pushed = await api.push(bad, b)
    assert pushed.status_code == 202
    await api.push(hospital.update(hospital.model_values(3), base_version=1)[1])
    assert_problem(await api.model(params={"version": 2}), 409, "probe_not_offered")

    # Execute: version 3 is reported bad; the probe of version 2 is pulled and checked.
    # (a "max_abs", which hefl's client never sends, is dropped: no decrypted value is kept)
    answer = await post_report(
        api, {"version": 3, "ok": False, "check": "range", "blocks": [0], "max_abs": 3.5e4}
    )
    job = (await api.http.get(api.at(), headers=api.auth())).json()
    probe = await api.model(params={"version": 2})
    version, values = hospital.decrypt_model(probe.content)
    refused = [
        await api.model(params={"version": 1}),
        await api.model(params={"version": 2, "since": 0}),
        await api.model(params={"version": 2, "update": str(bad_id)}),
    ]
    repaired = await post_report(
        api, {"version": 2, "ok": False, "check": hospital.check(values)[1]}
    )

    # Assert
    assert answer.status_code == 202
    assert answer.json() == {"state": "locating"}
    assert job["integrity"] == {
        "state": "locating",
        "probe": {"version": 2, "update_id": None, "client_id": None},
    }
    assert probe.status_code == 200
    assert probe.headers["X-Hefl-Model-Version"] == "2"
    assert version == 2
    assert not hospital.check(values)[0]
    assert_problem(refused[0], 409, "probe_not_offered")
    assert_problem(refused[1], 422, "request_invalid")
    assert_problem(refused[2], 409, "probe_not_offered")
    assert repaired.json() == {"state": "healthy"}
    status = await api.status()
    assert status["version"] == 4
    integrity = status["integrity"]
    assert integrity["state"] == "healthy"
    assert [(r["version"], r["ok"], r["check"]) for r in integrity["reports"]] == [
        (1, True, None),
        (3, False, "range"),
        (2, False, "range"),
    ]
    assert not any("max_abs" in r for r in integrity["reports"])
    assert [(p["probe"]["version"], p["outcome"]) for p in integrity["probes"]] == [(2, "bad")]
    (repair,) = integrity["repairs"]
    assert repair["removed"] == [
        {
            "update_id": str(bad_id),
            "client_id": "client-b",
            "client_name": "hospital-client-b",
            "version": 2,
            "weight": pushed.json()["weight"],  # subtracted at the weight it was applied at
        }
    ]
    assert (repair["version"], repair["versions_lost"], repair["quarantined"]) == (
        4,
        2,
        ["client-b"],
    )
    assert [q["client_id"] for q in integrity["quarantined"]] == ["client-b"]
    assert integrity["updates_removed"] == 1
    assert_problem(
        await api.push(hospital.update(hospital.model_values(4), base_version=4)[1], b),
        403,
        "client_quarantined",
    )
    metrics = (await api.http.get("/metrics")).text
    for line in (
        'hefl_server_integrity_reports_total{job="study"} 3.0',
        'hefl_server_repairs_total{job="study"} 1.0',
        'hefl_server_updates_removed_total{job="study"} 1.0',
        'hefl_server_clients_quarantined{job="study"} 1.0',
        'hefl_server_integrity_state{job="study",state="healthy"} 1.0',
    ):
        assert line in metrics


async def test_the_administrator_repairs_and_releases_by_hand(
    training: Api, hospital: Hospital, signing_key: Ed25519PrivateKey
) -> None:
    api = training
    b = mint_token(signing_key, "client-b")
    first = await api.push(hospital.update(hospital.model_values(1), base_version=0)[1], b)
    update_id = first.json()["update_id"]
    repairs, release = api.at("/repairs"), api.at("/quarantine/client-b")

    as_client = await api.http.post(repairs, json={"update_ids": [update_id]}, headers=api.auth())
    unknown = await api.http.post(
        repairs, json={"update_ids": [str(uuid.uuid4())]}, headers=api.as_admin()
    )
    empty = await api.http.post(repairs, json={"update_ids": []}, headers=api.as_admin())
    done = await api.http.post(
        repairs, json={"update_ids": [update_id], "quarantine": False}, headers=api.as_admin()
    )
    again = await api.http.post(repairs, json={"update_ids": [update_id]}, headers=api.as_admin())
    not_quarantined = await api.http.delete(release, headers=api.as_admin())

    assert_problem(as_client, 403, "token_wrong_role")
    assert_problem(unknown, 404, "update_not_found")
    assert_problem(empty, 422, "request_invalid")
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["version"], body["quarantined"], body["reason"]) == (
        2,
        [],
        "removed by the administrator",
    )
    assert [r["update_id"] for r in body["removed"]] == [update_id]
    assert_problem(again, 404, "update_not_found")
    assert_problem(not_quarantined, 404, "client_not_quarantined")
    assert "give its client id" in not_quarantined.json()["detail"]
    long_id = await api.http.delete(api.at("/quarantine/" + "x" * 5000), headers=api.as_admin())
    assert_problem(long_id, 404, "client_not_quarantined")
    assert len(long_id.json()["detail"]) < 400  # the path is not echoed whole
    second = await api.push(hospital.update(hospital.model_values(2), base_version=2)[1], b)
    quarantining = await api.http.post(
        repairs, json={"update_ids": [second.json()["update_id"]]}, headers=api.as_admin()
    )
    assert quarantining.json()["quarantined"] == ["client-b"]
    assert_problem(await api.http.delete(release, headers=api.auth()), 403, "token_wrong_role")
    assert (await api.http.delete(release, headers=api.as_admin())).status_code == 204
    assert (await api.status())["integrity"]["quarantined"] == []


async def test_integrity_reports_that_cannot_be_taken_are_refused(
    training: Api, hospital: Hospital, signing_key: Ed25519PrivateKey
) -> None:
    api = training
    b = mint_token(signing_key, "client-b")
    update_id = (
        await api.push(hospital.update(hospital.model_values(1), base_version=0)[1], b)
    ).json()["update_id"]
    cases: list[tuple[dict[str, Any], str | None, int, str]] = [
        ({"version": 2, "ok": True}, None, 409, "version_ahead"),
        ({"version": 1, "ok": True, "check": "range"}, None, 422, "request_invalid"),
        ({"version": 1, "ok": False, "check": "bogus"}, None, 422, "request_invalid"),
        ({"version": 1, "ok": False, "blocks": [3]}, None, 422, "request_invalid"),
        ({"version": -1, "ok": True}, None, 422, "request_invalid"),
        ({"version": 1, "ok": "yes"}, None, 422, "request_invalid"),
        ({"version": 0, "ok": True, "update_id": update_id}, None, 409, "probe_not_offered"),
        ({"version": 0, "ok": True, "update_id": str(uuid.uuid4())}, b, 409, "probe_not_offered"),
    ]
    for body, token, status, code in cases:
        assert_problem(await post_report(api, body, token), status, code)
    assert (await api.status())["integrity"]["reports_total"] == 0


# -- odd bodies: every parser's failure is the client's 4xx -------------------------------

NESTED_ARRAYS = b"[" * 1000 + b"]" * 1000
ODD_JSON = [
    NESTED_ARRAYS,
    b'{"a":' * 1000 + b"1" + b"}" * 1000,
    b'{"version": ' + b"9" * 5000 + b', "ok": true, "metrics": {}}',
    b'{"version": 1e999, "ok": true, "format": 1e999, "name": 1e999}',
    b'{"version": NaN, "ok": true, "metrics": {"loss": NaN}, "format": NaN}',
    b'{"version": Infinity, "metrics": {"loss": -Infinity}, "update_ids": [NaN]}',
    b'{"version": 1, "metrics": ' + NESTED_ARRAYS + b"}",
    b'{"update_ids": ' + NESTED_ARRAYS + b"}",
    b'{"tensors": ' + NESTED_ARRAYS + b', "format": 1, "block_size": 2048}',
    b'{"format": 1, "block_size": 2048, "tensors": [{"name": "w", "shape": [1e999]}]}',
    b'{"format": 2, "block_size": 1e400, "tensors": [{"name": [[]], "shape": [-1]}]}',
    b"\xff\xfe{not utf-8",
    b"",
    b"null",
    b'"a string"',
    b"[1, 2, 3]",
    b'{"version": 1, "ok": true}' * 3,
]
JSON_BODIES = [
    ("POST", "/v1/jobs", "admin"),
    ("PUT", "/layout", "client"),
    ("POST", "/metrics", "client"),
    ("POST", "/integrity", "client"),
    ("POST", "/repairs", "admin"),
]


@pytest.mark.parametrize(("method", "path", "role"), JSON_BODIES)
async def test_every_json_body_answers_4xx_to_odd_json(
    training: Api, method: str, path: str, role: str
) -> None:
    api = training
    url = path if path.startswith("/v1") else api.at(path)
    token = api.admin if role == "admin" else api.token
    for body in ODD_JSON:
        answer = await api.http.request(method, url, content=body, headers=api.auth(token))
        assert 400 <= answer.status_code < 500, (body[:40], answer.status_code, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"


async def test_a_job_spec_with_odd_numbers_is_a_located_spec_problem(api: Api) -> None:
    spec = json.loads(spec_body("odd"))
    text = json.dumps(spec).replace('"name": "odd"', '"name": "odd", "x": ' + "9" * 5000)
    answer = await api.http.post("/v1/jobs", content=text.encode(), headers=api.as_admin())
    assert_problem(answer, 422, "spec_invalid")


async def test_fuzzed_envelopes_answer_4xx_or_are_taken(api: Api, hospital: Hospital) -> None:
    # Prepare: a valid initial model and update, and 300 mutations of each.
    rng = random.Random(13)
    initial = hospital.initial_model(hospital.model_values(0))
    await api.http.put(api.at("/layout"), content=hospital.layout.to_json(), headers=api.auth())

    def mutations(data: bytes) -> list[bytes]:
        out = [data[:n] for n in (0, 1, 7, 40, len(data) // 2, len(data) - 1)]
        for _ in range(150):
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(min(len(data), 200))  # the header and first block
                flipped[position] = rng.randrange(256)
            out.append(bytes(flipped))
        out += [data + bytes(rng.randrange(256) for _ in range(9)), bytes(range(256)) * 4]
        return out

    # Execute / Assert
    for body in mutations(initial):
        answer = await api.http.put(api.at("/initial-model"), content=body, headers=api.auth())
        assert 400 <= answer.status_code < 500 or answer.status_code == 201, answer.text
    if (await api.model()).status_code == 409:  # no mutation was a valid model after all
        await api.http.put(api.at("/initial-model"), content=initial, headers=api.auth())
    update = hospital.update(hospital.model_values(1), base_version=0)[1]
    for body in mutations(update):
        answer = await api.push(body)
        assert 400 <= answer.status_code < 500 or answer.status_code == 202, answer.text
    assert np.isfinite((await api.status())["version"])
