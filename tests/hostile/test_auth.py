"""Every protected endpoint of both services against missing, malformed, expired, forged,
wrong-role, revoked and replayed credentials (both apps in process, tokens from keyauth)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import httpx
import jwt
import pytest
from pydantic import SecretStr

import crypto
from fl_server.app import create_app as create_server
from fl_server.material import KeyauthMaterial
from harness.parties import Party, make_layout, model_envelope, random_blocks, update_envelope
from harness.studies import study_json
from keyauth.app import create_app as create_keyauth
from keyauth.settings import KeyauthSettings
from keyauth.tokens import TokenSigner, generate_signing_key, signing_key_from_pem
from tests.fl_server.helpers import make_settings

pytestmark = pytest.mark.anyio

ADMIN_KEY = "hostile-admin-key-0123456789abcdef"
PROBLEM = "application/problem+json"
JOB = "hostile"


@dataclass
class World:
    keyauth: httpx.AsyncClient
    server: httpx.AsyncClient
    keyauth_app: Any
    server_app: Any
    party: Party
    victim_id: str
    victim_token: str
    admin_token: str


async def _enroll(http: httpx.AsyncClient, name: str) -> tuple[str, str, str]:
    issued = await http.post(
        "/v1/enrollment-tokens", json={"client_name": name}, headers={"X-Admin-Key": ADMIN_KEY}
    )
    creds = (await http.post("/v1/enroll", json={"token": issued.json()["token"]})).json()
    token = await http.post(
        "/v1/token",
        json={"client_id": creds["client_id"], "client_secret": creds["client_secret"]},
    )
    return creds["client_id"], creds["client_secret"], token.json()["access_token"]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = KeyauthSettings(
        state_dir=tmp_path / "keyauth", admin_key=SecretStr(ADMIN_KEY), profile="test-n2048"
    )
    kapp = create_keyauth(settings)
    async with kapp.router.lifespan_context(kapp):
        transport = httpx.ASGITransport(app=kapp, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as ka:
            client_id, secret, token = await _enroll(ka, "hospital-a")
            victim_id, _, victim_token = await _enroll(ka, "hospital-gone")
            auth = {"Authorization": f"Bearer {token}"}
            context = await ka.get("/v1/keys/secret-context", headers=auth)
            public = await ka.get("/v1/keys/public-context")
            key = (await ka.get("/v1/keys/verification-key")).json()
            profile = crypto.get_profile(context.headers["X-Hefl-Profile"])
            party = Party(
                client_id,
                secret,
                token,
                context.content,
                crypto.ClientCipher(context.content, profile),
                key["key_epoch"],
            )
            material = KeyauthMaterial(
                public_context=public.content,
                key_epoch=key["key_epoch"],
                profile=key["profile"],
                verification_key_pem=key["public_key_pem"],
            )
            signer = TokenSigner(
                signing_key_from_pem(kapp.state.authority.store.load_signing_key())
            )
            admin = signer.issue(client_id="admin", client_name="admin", key_epoch=1, role="admin")
            sapp = create_server(make_settings(tmp_path / "server"), keyauth_material=material)
            async with sapp.router.lifespan_context(sapp):
                st = httpx.ASGITransport(app=sapp)
                async with httpx.AsyncClient(transport=st, base_url="http://server") as fl:
                    created = await fl.post(
                        "/v1/jobs",
                        content=study_json(JOB, profile=profile.name).encode(),
                        headers={"Authorization": f"Bearer {admin.token}"},
                    )
                    assert created.status_code == 201, created.text
                    yield World(ka, fl, kapp, sapp, party, victim_id, victim_token, admin.token)


def _signer(world: World, issued_ago: float = 0) -> TokenSigner:
    pem = world.keyauth_app.state.authority.store.load_signing_key()
    return TokenSigner(signing_key_from_pem(pem), clock=lambda: time.time() - issued_ago)


class _Claims(TypedDict):
    client_id: str
    client_name: str
    key_epoch: int


def _bad_tokens(world: World, takes: str) -> dict[str, tuple[dict[str, str], int, set[str]]]:
    """Name -> (headers, status, acceptable codes), for a route that ``takes`` a client's
    token, the administrator's, or either."""
    party = world.party
    claims = _Claims(client_id=party.client_id, client_name="hospital-a", key_epoch=1)
    expired = _signer(world, issued_ago=3600).issue(**claims).token
    other_role = {"client": "admin", "admin": "client", "either": "auditor"}[takes]
    wrong_role = _signer(world).issue(**claims, role=other_role).token
    # A revoked client's token is refused for its role first where clients are not taken.
    revoked = {"token_wrong_role"} if takes == "admin" else {"client_revoked"}
    forged = TokenSigner(generate_signing_key()).issue(**claims).token
    none_alg = jwt.encode(
        {
            "sub": party.client_id,
            "role": "client",
            "aud": "hefl",
            "iss": "hefl-keyauth",
            "exp": int(time.time()) + 300,
        },
        key="",  # PyJWT's spelling of "no key" for alg none
        algorithm="none",
    )
    head, payload, signature = party.token.split(".")
    tampered = f"{head}.{payload[:-4]}AAAA.{signature}"
    wrong_aud = (
        TokenSigner(
            signing_key_from_pem(world.keyauth_app.state.authority.store.load_signing_key()),
            audience="other",
        )
        .issue(**claims)
        .token
    )

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    invalid = {"token_invalid"}
    return {
        "missing": ({}, 401, {"token_missing"}),
        "empty header": ({"Authorization": ""}, 401, {"token_missing", "token_invalid"}),
        "basic scheme": ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, invalid | {"token_missing"}),
        "bearer alone": ({"Authorization": "Bearer"}, 401, invalid | {"token_missing"}),
        "not a jwt": (bearer("not.a.jwt"), 401, invalid),
        "huge": (bearer("a" * 6000), 401, invalid),
        "alg none": (bearer(none_alg), 401, invalid),
        "tampered payload": (bearer(tampered), 401, invalid),
        "other audience": (bearer(wrong_aud), 401, invalid),
        "expired": (bearer(expired), 401, {"token_expired"}),
        "wrong signature": (bearer(forged), 401, invalid),
        "wrong role": (bearer(wrong_role), 403, {"token_wrong_role"}),
        "revoked client": (bearer(world.victim_token), 403, revoked),
    }


def _assert_problem(what: str, answer: httpx.Response, status: int, codes: set[str]) -> None:
    assert answer.status_code == status, (what, answer.status_code, answer.text)
    assert answer.headers["content-type"] == PROBLEM, what
    assert answer.json()["code"] in codes, (what, answer.text)


async def test_every_bearer_endpoint_refuses_every_bad_token(world: World) -> None:
    # Prepare: revoke the victim at keyauth; the server learns it from keyauth's list.
    revoked = await world.keyauth.delete(
        f"/v1/clients/{world.victim_id}", headers={"X-Admin-Key": ADMIN_KEY}
    )
    assert revoked.status_code == 204
    listed = (await world.keyauth.get("/v1/revocations")).json()["revoked"]
    world.server_app.state.service.set_revoked(listed)
    party = world.party
    layout = make_layout(3000, party.profile)
    values = random_blocks(layout, party.profile, 1)
    job = f"/v1/jobs/{JOB}"
    spec = study_json("another", profile=party.profile.name).encode()
    endpoints: list[tuple[httpx.AsyncClient, str, str, str, dict[str, Any]]] = [
        (world.keyauth, "client", "GET", "/v1/keys/secret-context", {}),
        (world.server, "either", "GET", "/v1/jobs", {}),
        (world.server, "admin", "POST", "/v1/jobs", {"content": spec}),
        (world.server, "either", "GET", job, {}),
        (world.server, "either", "GET", f"{job}/spec", {}),
        (world.server, "admin", "POST", f"{job}/pause", {}),
        (world.server, "admin", "POST", f"{job}/resume", {}),
        (world.server, "admin", "POST", f"{job}/stop", {}),
        (world.server, "client", "PUT", f"{job}/layout", {"content": layout.to_json()}),
        (world.server, "client", "GET", f"{job}/layout", {}),
        (
            world.server,
            "client",
            "PUT",
            f"{job}/initial-model",
            {"content": model_envelope(party, layout, values)},
        ),
        (world.server, "client", "GET", f"{job}/model", {}),
        (world.server, "client", "POST", f"{job}/slots", {}),
        (world.server, "client", "POST", f"{job}/leases", {}),
        (world.server, "client", "DELETE", f"{job}/slots", {}),
        (
            world.server,
            "client",
            "POST",
            f"{job}/updates",
            {"content": update_envelope(party, layout, values, 0)[1]},
        ),
        (
            world.server,
            "client",
            "POST",
            f"{job}/metrics",
            {"json": {"version": 0, "metrics": {"loss": 1.0, "accuracy": 0.5, "n_samples": 3}}},
        ),
    ]

    # Execute + Assert
    tried = 0
    for http, takes, method, path, body in endpoints:
        for what, (headers, status, codes) in _bad_tokens(world, takes).items():
            answer = await http.request(method, path, headers=headers, **body)
            _assert_problem(f"{method} {path}: {what}", answer, status, codes)
            if status == 401:
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            tried += 1
    assert tried == len(endpoints) * 13
    admin = {"Authorization": f"Bearer {world.admin_token}"}
    state = (await world.server.get(job, headers=admin)).json()
    assert (state["state"], state["version"], state["layout_fingerprint"]) == (
        "waiting_for_initial_model",
        0,
        None,
    )
    listed = (await world.server.get("/v1/jobs", headers=admin)).json()
    assert [j["name"] for j in listed] == [JOB]


async def test_a_valid_bearer_token_may_be_replayed_within_its_lifetime(world: World) -> None:
    # By design: bearer tokens are not single-use (confidential transport, 5 min lifetime).
    auth = {"Authorization": f"Bearer {world.party.token}"}
    answers = [await world.keyauth.get("/v1/keys/secret-context", headers=auth) for _ in range(3)]
    answers += [await world.server.post(f"/v1/jobs/{JOB}/slots", headers=auth) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200, 409, 409, 409]  # no job yet
    assert all(a.json()["code"] == "job_not_started" for a in answers[3:])


async def test_every_admin_endpoint_refuses_a_missing_or_wrong_admin_key(world: World) -> None:
    endpoints: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/enrollment-tokens", {"json": {"client_name": "x"}}),
        ("GET", "/v1/clients", {}),
        ("DELETE", f"/v1/clients/{world.party.client_id}", {}),
        ("POST", "/v1/key-epochs", {}),
    ]
    keys: dict[str, dict[str, str]] = {
        "missing": {},
        "empty": {"X-Admin-Key": ""},
        "wrong": {"X-Admin-Key": "x" * 32},
        "prefix": {"X-Admin-Key": ADMIN_KEY[:-1]},
        "longer": {"X-Admin-Key": ADMIN_KEY + "x"},
        "a client token": {"X-Admin-Key": world.party.token},
        "as bearer": {"Authorization": f"Bearer {ADMIN_KEY}"},
    }
    for method, path, body in endpoints:
        for what, headers in keys.items():
            answer = await world.keyauth.request(method, path, headers=headers, **body)
            assert answer.status_code in (401, 403), (method, path, what, answer.text)
            assert answer.headers["content-type"] == PROBLEM
    # Nothing happened: the client is still active and the epoch unchanged.
    clients = (await world.keyauth.get("/v1/clients", headers={"X-Admin-Key": ADMIN_KEY})).json()
    assert {c["id"]: c["revoked"] for c in clients}[world.party.client_id] is False
    assert (await world.keyauth.get("/healthz")).json()["key_epoch"] == 1


async def test_enrollment_and_client_credentials_resist_replay_and_guessing(world: World) -> None:
    issued = await world.keyauth.post(
        "/v1/enrollment-tokens", json={"client_name": "h-new"}, headers={"X-Admin-Key": ADMIN_KEY}
    )
    token = issued.json()["token"]
    first = await world.keyauth.post("/v1/enroll", json={"token": token})
    # Until the client's first access token the token re-delivers the same enrollment
    # (a lost answer is not an orphan); after it, a replay is refused.
    redelivered = await world.keyauth.post("/v1/enroll", json={"token": token})
    credentials = {k: first.json()[k] for k in ("client_id", "client_secret")}
    confirmed = await world.keyauth.post("/v1/token", json=credentials)
    replayed = await world.keyauth.post("/v1/enroll", json={"token": token})
    guessed = await world.keyauth.post("/v1/enroll", json={"token": token[:-2] + "xx"})
    wrong_secret = await world.keyauth.post(
        "/v1/token",
        json={"client_id": world.party.client_id, "client_secret": world.party.client_secret[::-1]},
    )
    revoked = await world.keyauth.post(
        "/v1/token", json={"client_id": "no-such-client", "client_secret": "x" * 40}
    )
    assert first.status_code == 201
    assert redelivered.status_code == 200
    assert redelivered.json() == first.json()
    assert confirmed.status_code == 200
    assert replayed.status_code in (401, 403)
    assert replayed.headers["content-type"] == PROBLEM
    assert guessed.status_code == 401
    assert guessed.headers["content-type"] == PROBLEM
    assert wrong_secret.status_code == 401
    assert revoked.status_code == 401
    names = [
        c["name"]
        for c in (await world.keyauth.get("/v1/clients", headers={"X-Admin-Key": ADMIN_KEY})).json()
    ]
    assert names.count("h-new") == 1
