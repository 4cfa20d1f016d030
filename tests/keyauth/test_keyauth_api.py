"""The REST surface through the ASGI app: the contract, and a clear 4xx for every bad input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from starlette.types import Message

import crypto
from hefl_wire import ADMIN_ROLE, CLIENT_ROLE, VIEWER_ROLE, TokenError, TokenVerifier
from keyauth.app import BodySizeLimitMiddleware, create_app
from keyauth.service import hash_secret
from keyauth.store import EnrollmentTokenRecord
from keyauth.tokens import TokenSigner, signing_key_from_pem
from tests.keyauth.keyauth_helpers import ADMIN_KEY, make_settings, started

pytestmark = pytest.mark.anyio

ADMIN = {"X-Admin-Key": ADMIN_KEY}
PROFILE = crypto.get_profile("test-n2048")


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["title"]
    assert problem["type"] == "about:blank"
    assert isinstance(problem["detail"], str)
    return problem


async def enrollment_token(api: httpx.AsyncClient, name: str = "hospital-a") -> str:
    response = await api.post("/v1/enrollment-tokens", json={"client_name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def enroll(api: httpx.AsyncClient, name: str = "hospital-a") -> dict[str, Any]:
    response = await api.post("/v1/enroll", json={"token": await enrollment_token(api, name)})
    assert response.status_code == 201, response.text
    enrolled: dict[str, Any] = response.json()
    return enrolled


async def access_token(api: httpx.AsyncClient, enrolled: dict[str, Any]) -> str:
    credentials = {k: enrolled[k] for k in ("client_id", "client_secret")}
    response = await api.post("/v1/token", json=credentials)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signer_for(app: FastAPI, *, issued_ago: float = 0.0) -> TokenSigner:
    """A signer holding the app's real signing key, to mint expired or odd tokens."""
    pem = app.state.authority.store.load_signing_key()
    return TokenSigner(signing_key_from_pem(pem), clock=lambda: time.time() - issued_ago)


# The happy path and the contract


async def test_health_reports_the_key_epoch(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "key_epoch": 1}


async def test_full_client_flow(api: httpx.AsyncClient) -> None:
    # Prepare
    created = await api.post(
        "/v1/enrollment-tokens",
        json={"client_name": "hospital-a", "expires_in": 600},
        headers=ADMIN,
    )

    # Execute
    enrolled = await api.post("/v1/enroll", json={"token": created.json()["token"]})
    body = enrolled.json()
    issued = await api.post(
        "/v1/token", json={"client_id": body["client_id"], "client_secret": body["client_secret"]}
    )
    token = issued.json()["access_token"]
    secret = await api.get("/v1/keys/secret-context", headers=bearer(token))

    # Assert
    assert created.status_code == 201
    assert set(created.json()) == {"token", "client_name", "expires_at"}
    assert created.json()["client_name"] == "hospital-a"
    assert created.headers["cache-control"] == "no-store"
    assert enrolled.status_code == 201
    assert set(body) == {"client_id", "client_name", "client_secret", "key_epoch", "profile"}
    assert body["key_epoch"] == 1
    assert body["profile"] == "test-n2048"
    assert enrolled.headers["cache-control"] == "no-store"
    assert issued.status_code == 200
    assert issued.json()["token_type"] == "bearer"
    assert issued.json()["expires_in"] == 300
    assert issued.json()["key_epoch"] == 1
    assert secret.status_code == 200
    assert secret.headers["content-type"] == "application/octet-stream"
    assert secret.headers["x-hefl-key-epoch"] == "1"
    assert secret.headers["x-hefl-profile"] == "test-n2048"
    assert secret.headers["cache-control"] == "no-store"
    assert crypto.ClientCipher(secret.content, PROFILE).profile == PROFILE


async def test_expires_at_is_iso8601_in_the_future(api: httpx.AsyncClient) -> None:
    from datetime import UTC, datetime, timedelta

    response = await api.post(
        "/v1/enrollment-tokens",
        json={"client_name": "hospital-a", "expires_in": 600},
        headers=ADMIN,
    )

    expires_at = datetime.fromisoformat(response.json()["expires_at"])
    assert expires_at.tzinfo is not None
    remaining = expires_at - datetime.now(UTC)
    assert timedelta(seconds=590) < remaining <= timedelta(seconds=600)


async def test_public_context_is_keyless_and_usable_by_the_server(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/keys/public-context")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-hefl-key-epoch"] == "1"
    assert response.headers["x-hefl-profile"] == "test-n2048"
    assert crypto.ServerCipher(response.content, PROFILE).profile == PROFILE
    with pytest.raises(crypto.ContextError):
        crypto.ClientCipher(response.content, PROFILE)


async def test_server_verifies_tokens_with_the_published_key(api: httpx.AsyncClient) -> None:
    enrolled = await enroll(api)
    token = await access_token(api, enrolled)

    response = await api.get("/v1/keys/verification-key")
    key = response.json()

    assert response.status_code == 200
    assert key["algorithm"] == "EdDSA"
    assert key["issuer"] == "hefl-keyauth"
    assert key["audience"] == "hefl"
    assert key["key_epoch"] == 1
    assert key["profile"] == "test-n2048"
    assert key["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    claims = TokenVerifier(key["public_key_pem"]).verify(token)
    assert claims.client_id == enrolled["client_id"]
    assert claims.client_name == "hospital-a"


async def test_admin_lists_and_revokes_clients(api: httpx.AsyncClient) -> None:
    first = await enroll(api, "hospital-a")
    second = await enroll(api, "hospital-b")

    revoked = await api.delete(f"/v1/clients/{first['client_id']}", headers=ADMIN)
    again = await api.delete(f"/v1/clients/{first['client_id']}", headers=ADMIN)
    listing = await api.get("/v1/clients", headers=ADMIN)

    assert revoked.status_code == 204
    assert again.status_code == 204
    clients = {c["id"]: c for c in listing.json()}
    assert set(clients) == {first["client_id"], second["client_id"]}
    assert clients[first["client_id"]]["revoked"] is True
    assert clients[first["client_id"]]["revoked_at"] is not None
    assert clients[second["client_id"]] | {"enrolled_at": None} == {
        "id": second["client_id"],
        "name": "hospital-b",
        "enrolled_at": None,
        "revoked": False,
        "revoked_at": None,
        "confirmed": False,
    }
    await access_token(api, second)
    listing = await api.get("/v1/clients", headers=ADMIN)
    assert {c["id"]: c["confirmed"] for c in listing.json()}[second["client_id"]] is True
    assert "client_secret" not in listing.text
    assert second["client_secret"] not in listing.text
    published = await api.get("/v1/revocations")
    assert published.status_code == 200
    assert published.json() == {"revoked": [first["client_id"]]}


async def test_rotation_moves_to_the_next_epoch_and_keeps_the_old(api: httpx.AsyncClient) -> None:
    enrolled = await enroll(api)
    old_public = (await api.get("/v1/keys/public-context")).content

    rotated = await api.post("/v1/key-epochs", headers=ADMIN)
    token = await access_token(api, enrolled)
    new_secret = await api.get("/v1/keys/secret-context", headers=bearer(token))
    old_secret = await api.get("/v1/keys/secret-context?epoch=1", headers=bearer(token))
    old_public_again = await api.get("/v1/keys/public-context", params={"epoch": 1})

    assert rotated.status_code == 201
    assert rotated.json() == {"key_epoch": 2, "profile": "test-n2048"}
    assert (await api.get("/healthz")).json()["key_epoch"] == 2
    assert new_secret.headers["x-hefl-key-epoch"] == "2"
    assert old_secret.headers["x-hefl-key-epoch"] == "1"
    assert new_secret.content != old_secret.content
    assert old_public_again.content == old_public
    assert (
        TokenVerifier((await api.get("/v1/keys/verification-key")).json()["public_key_pem"])
        .verify(token)
        .key_epoch
        == 2
    )


async def test_restart_serves_the_same_keys_and_clients(tmp_path: Path) -> None:
    # Prepare
    settings = make_settings(tmp_path / "state")
    async with started(create_app(settings)) as api:
        enrolled = await enroll(api)
        before = (await api.get("/v1/keys/public-context")).content
        key_before = (await api.get("/v1/keys/verification-key")).json()
        secret_before = (
            await api.get(
                "/v1/keys/secret-context", headers=bearer(await access_token(api, enrolled))
            )
        ).content

    # Execute
    async with started(create_app(settings)) as api:
        token = await access_token(api, enrolled)
        secret_after = await api.get("/v1/keys/secret-context", headers=bearer(token))
        after = (await api.get("/v1/keys/public-context")).content
        key_after = (await api.get("/v1/keys/verification-key")).json()
        clients = (await api.get("/v1/clients", headers=ADMIN)).json()

    # Assert
    assert after == before
    assert key_after == key_before
    assert secret_after.content == secret_before
    assert [c["id"] for c in clients] == [enrolled["client_id"]]


async def test_openapi_lists_exactly_the_contract(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]

    surface = {(path, method) for path, item in paths.items() for method in item}

    assert surface == {
        ("/healthz", "get"),
        ("/v1/enrollment-tokens", "post"),
        ("/v1/enroll", "post"),
        ("/v1/token", "post"),
        ("/v1/keys/secret-context", "get"),
        ("/v1/keys/public-context", "get"),
        ("/v1/keys/verification-key", "get"),
        ("/v1/keys/key-id", "get"),
        ("/v1/clients", "get"),
        ("/v1/clients/{client_id}", "delete"),
        ("/v1/key-epochs", "post"),
        ("/v1/admin/token", "post"),
        ("/v1/viewer/token", "post"),
        ("/v1/revocations", "get"),
    }


# The administrator's access token


async def verifier_of(api: httpx.AsyncClient) -> TokenVerifier:
    return TokenVerifier((await api.get("/v1/keys/verification-key")).json()["public_key_pem"])


def lifetime_of(token: str) -> int:
    """``exp - iat`` of a token (read, not verified: the tests verify it apart)."""
    payload = jwt.decode(token, options={"verify_signature": False})
    return int(payload["exp"]) - int(payload["iat"])


async def test_admin_token_is_a_bearer_token_of_the_admin_role(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/admin/token", headers=ADMIN)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert (body["token_type"], body["expires_in"]) == ("bearer", 300)
    assert response.headers["cache-control"] == "no-store"
    claims = (await verifier_of(api)).verify(body["access_token"], role=ADMIN_ROLE)
    assert (claims.client_id, claims.client_name, claims.role) == ("admin", "admin", "admin")
    assert claims.key_epoch == 1
    assert lifetime_of(body["access_token"]) == 300


async def test_admin_token_lifetime_comes_from_the_settings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", admin_token_ttl=45)

    async with started(create_app(settings)) as api:
        body = (await api.post("/v1/admin/token", headers=ADMIN)).json()

    assert body["expires_in"] == 45
    assert lifetime_of(body["access_token"]) == 45


async def test_admin_token_follows_the_key_epoch(api: httpx.AsyncClient) -> None:
    await api.post("/v1/key-epochs", headers=ADMIN)

    token = (await api.post("/v1/admin/token", headers=ADMIN)).json()["access_token"]

    assert (await verifier_of(api)).verify(token, role=ADMIN_ROLE).key_epoch == 2


async def test_admin_token_is_refused_as_a_client_token(api: httpx.AsyncClient) -> None:
    token = (await api.post("/v1/admin/token", headers=ADMIN)).json()["access_token"]

    download = await api.get("/v1/keys/secret-context", headers=bearer(token))

    assert_problem(download, 403, "token_wrong_role")
    with pytest.raises(TokenError) as caught:
        (await verifier_of(api)).verify(token, role=CLIENT_ROLE)
    assert caught.value.code == "token_wrong_role"


async def test_a_client_token_is_no_admin_token(api: httpx.AsyncClient) -> None:
    token = await access_token(api, await enroll(api))

    with pytest.raises(TokenError) as caught:
        (await verifier_of(api)).verify(token, role=ADMIN_ROLE)

    assert (caught.value.code, caught.value.http_status) == ("token_wrong_role", 403)
    refused = await api.post("/v1/admin/token", headers=bearer(token))
    assert_problem(refused, 401, "admin_key_missing")


# Viewer tokens: the operator page's read-only token


async def test_viewer_token_is_a_bearer_token_of_the_viewer_role(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/viewer/token", headers=ADMIN)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert (body["token_type"], body["expires_in"]) == ("bearer", 12 * 3600)
    assert response.headers["cache-control"] == "no-store"
    claims = (await verifier_of(api)).verify(body["access_token"], role=VIEWER_ROLE)
    assert (claims.client_id, claims.client_name, claims.role) == ("viewer", "viewer", "viewer")
    assert claims.key_epoch == 1
    assert lifetime_of(body["access_token"]) == 12 * 3600


async def test_viewer_token_needs_the_admin_key_and_a_wrong_one_is_401(
    api: httpx.AsyncClient,
) -> None:
    missing = await api.post("/v1/viewer/token")
    wrong = await api.post("/v1/viewer/token", headers={"X-Admin-Key": "wrong"})
    client = await access_token(api, await enroll(api))
    as_client = await api.post("/v1/viewer/token", headers=bearer(client))

    assert_problem(missing, 401, "admin_key_missing")
    assert_problem(wrong, 401, "admin_key_invalid")
    assert_problem(as_client, 401, "admin_key_missing")


async def test_viewer_token_lifetime_comes_from_the_settings_and_may_be_shorter(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "state", viewer_token_ttl=120)

    async with started(create_app(settings)) as api:
        default = (await api.post("/v1/viewer/token", headers=ADMIN)).json()
        shorter = (
            await api.post("/v1/viewer/token", headers=ADMIN, json={"expires_in": 60})
        ).json()
        longer = await api.post("/v1/viewer/token", headers=ADMIN, json={"expires_in": 121})
        none = await api.post("/v1/viewer/token", headers=ADMIN, json={"expires_in": 0})
        unknown = await api.post("/v1/viewer/token", headers=ADMIN, json={"role": "admin"})

    assert (default["expires_in"], lifetime_of(default["access_token"])) == (120, 120)
    assert (shorter["expires_in"], lifetime_of(shorter["access_token"])) == (60, 60)
    assert (
        "KEYAUTH_VIEWER_TOKEN_TTL"
        in assert_problem(longer, 422, "expires_in_out_of_range")["detail"]
    )
    assert_problem(none, 422, "expires_in_out_of_range")
    assert unknown.status_code == 422


async def test_a_viewer_token_opens_nothing_at_keyauth(api: httpx.AsyncClient) -> None:
    token = (await api.post("/v1/viewer/token", headers=ADMIN)).json()["access_token"]
    verifier = await verifier_of(api)

    secret = await api.get("/v1/keys/secret-context", headers=bearer(token))
    admin = await api.post("/v1/admin/token", headers=bearer(token))
    clients = await api.get("/v1/clients", headers=bearer(token))

    assert_problem(secret, 403, "token_wrong_role")
    assert_problem(admin, 401, "admin_key_missing")
    assert_problem(clients, 401, "admin_key_missing")
    for role in (CLIENT_ROLE, ADMIN_ROLE):
        with pytest.raises(TokenError) as caught:
            verifier.verify(token, role=role)
        assert caught.value.code == "token_wrong_role"


# Enrollment tokens


async def test_used_enrollment_token_is_forbidden_and_creates_nothing(
    api: httpx.AsyncClient,
) -> None:
    # Prepare: enrolled, and confirmed by the client's first access token.
    token = await enrollment_token(api)
    first = await api.post("/v1/enroll", json={"token": token})
    assert first.status_code == 201
    await access_token(api, first.json())

    # Execute
    response = await api.post("/v1/enroll", json={"token": token})

    # Assert
    assert_problem(response, 403, "enrollment_token_used")
    assert len((await api.get("/v1/clients", headers=ADMIN)).json()) == 1


async def test_unconfirmed_enrollment_is_delivered_again_with_200(
    api: httpx.AsyncClient,
) -> None:
    # Prepare: the first answer is lost before the client saves it.
    token = await enrollment_token(api)
    first = await api.post("/v1/enroll", json={"token": token})

    # Execute
    again = await api.post("/v1/enroll", json={"token": token})

    # Assert: the same body, 200 (nothing new was created), no caching, one client.
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["cache-control"] == "no-store"
    clients = (await api.get("/v1/clients", headers=ADMIN)).json()
    assert [c["id"] for c in clients] == [first.json()["client_id"]]
    assert await access_token(api, again.json())


async def test_redelivery_window_comes_from_the_settings(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "state", enrollment_redelivery_window=0))
    async with started(app) as api:
        token = await enrollment_token(api)
        assert (await api.post("/v1/enroll", json={"token": token})).status_code == 201

        response = await api.post("/v1/enroll", json={"token": token})

    assert_problem(response, 403, "enrollment_token_used")


async def test_openapi_documents_both_enrollment_answers(api: httpx.AsyncClient) -> None:
    operation = (await api.get("/openapi.json")).json()["paths"]["/v1/enroll"]["post"]

    answers = operation["responses"]

    assert {"200", "201"} <= set(answers)
    assert answers["200"]["content"] == answers["201"]["content"]


async def test_unknown_enrollment_token_is_unauthorized(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/enroll", json={"token": "x" * 43})

    assert_problem(response, 401, "enrollment_token_invalid")
    assert (await api.get("/v1/clients", headers=ADMIN)).json() == []


async def test_expired_enrollment_token_is_unauthorized(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    now = time.time()
    app.state.authority.store.add_enrollment_token(
        EnrollmentTokenRecord(hash_secret("old-token"), "hospital-a", now - 100, now - 1)
    )

    response = await api.post("/v1/enroll", json={"token": "old-token"})

    assert_problem(response, 401, "enrollment_token_expired")
    assert (await api.get("/v1/clients", headers=ADMIN)).json() == []


async def test_token_for_an_active_name_conflicts(api: httpx.AsyncClient) -> None:
    await enroll(api, "hospital-a")

    response = await api.post(
        "/v1/enrollment-tokens", json={"client_name": "hospital-a"}, headers=ADMIN
    )

    assert_problem(response, 409, "client_name_taken")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"client_name": "has space"}, "request_invalid"),
        ({"client_name": ""}, "request_invalid"),
        ({}, "request_invalid"),
        ({"client_name": "hospital-a", "expires_in": 0}, "expires_in_out_of_range"),
        ({"client_name": "hospital-a", "expires_in": 10**9}, "expires_in_out_of_range"),
        ({"client_name": "hospital-a", "expires_in": "soon"}, "request_invalid"),
        ({"client_name": "hospital-a", "role": "admin"}, "request_invalid"),
    ],
)
async def test_bad_enrollment_token_requests(
    api: httpx.AsyncClient, body: dict[str, Any], code: str
) -> None:
    response = await api.post("/v1/enrollment-tokens", json=body, headers=ADMIN)

    assert_problem(response, 422, code)


# Administrator authentication


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/enrollment-tokens"),
        ("GET", "/v1/clients"),
        ("DELETE", "/v1/clients/some-id"),
        ("POST", "/v1/key-epochs"),
        ("POST", "/v1/admin/token"),
        ("POST", "/v1/viewer/token"),
    ],
)
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "admin_key_missing"),
        ({"X-Admin-Key": ""}, "admin_key_missing"),
        ({"X-Admin-Key": "wrong"}, "admin_key_invalid"),
        ({"X-Admin-Key": ADMIN_KEY + "x"}, "admin_key_invalid"),
    ],
)
async def test_admin_endpoints_need_the_admin_key(
    api: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], code: str
) -> None:
    response = await api.request(method, path, headers=headers, json={"client_name": "h"})

    assert_problem(response, 401, code)
    assert response.headers["www-authenticate"].startswith("X-Admin-Key")
    assert (await api.get("/healthz")).json()["key_epoch"] == 1


async def test_placeholder_admin_key_is_refused_off_loopback(tmp_path: Path) -> None:
    # Prepare: KEYAUTH_HOST says loopback, but the request arrived on a public address.
    settings = make_settings(tmp_path / "state", admin_key="change-me")
    placeholder = {"X-Admin-Key": "change-me"}

    # Execute
    async with started(create_app(settings), base_url="http://10.1.2.3") as exposed:
        refused = await exposed.get("/v1/clients", headers=placeholder)
    async with started(create_app(settings), base_url="http://127.0.0.1") as local:
        accepted = await local.get("/v1/clients", headers=placeholder)

    # Assert
    assert_problem(refused, 403, "admin_key_placeholder")
    assert accepted.status_code == 200


async def test_revoking_an_unknown_client_is_not_found(api: httpx.AsyncClient) -> None:
    response = await api.delete("/v1/clients/no-such-client", headers=ADMIN)

    assert_problem(response, 404, "client_not_found")


async def test_overlong_client_id_in_path_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.delete("/v1/clients/" + "a" * 200, headers=ADMIN)

    assert_problem(response, 422, "request_invalid")


# Client credentials and access tokens


async def test_wrong_client_secret_is_unauthorized(api: httpx.AsyncClient) -> None:
    enrolled = await enroll(api)

    response = await api.post(
        "/v1/token", json={"client_id": enrolled["client_id"], "client_secret": "guess"}
    )

    assert_problem(response, 401, "client_credentials_invalid")


async def test_revoked_client_gets_no_token_and_no_secret_context(
    api: httpx.AsyncClient,
) -> None:
    enrolled = await enroll(api)
    token = await access_token(api, enrolled)
    await api.delete(f"/v1/clients/{enrolled['client_id']}", headers=ADMIN)

    new_token = await api.post(
        "/v1/token",
        json={"client_id": enrolled["client_id"], "client_secret": enrolled["client_secret"]},
    )
    download = await api.get("/v1/keys/secret-context", headers=bearer(token))

    assert_problem(new_token, 403, "client_revoked")
    assert_problem(download, 403, "client_revoked")
    assert TokenVerifier(
        (await api.get("/v1/keys/verification-key")).json()["public_key_pem"]
    ).verify(token), "the old token stays verifiable offline until it expires"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "token_missing"),
        ({"Authorization": ""}, "token_missing"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "token_invalid"),
        ({"Authorization": "Bearer"}, "token_invalid"),
        ({"Authorization": "Bearer not-a-jwt"}, "token_invalid"),
        ({"Authorization": "Bearer " + "a" * 5000}, "token_invalid"),
    ],
)
async def test_secret_context_needs_a_bearer_token(
    api: httpx.AsyncClient, headers: dict[str, str], code: str
) -> None:
    response = await api.get("/v1/keys/secret-context", headers=headers)

    assert_problem(response, 401, code)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_expired_access_token_is_refused(api: httpx.AsyncClient, app: FastAPI) -> None:
    enrolled = await enroll(api)
    old = signer_for(app, issued_ago=1000).issue(
        client_id=enrolled["client_id"], client_name="hospital-a", key_epoch=1
    )

    response = await api.get("/v1/keys/secret-context", headers=bearer(old.token))

    assert_problem(response, 401, "token_expired")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_token_of_another_role_is_forbidden(api: httpx.AsyncClient, app: FastAPI) -> None:
    enrolled = await enroll(api)
    other_role = signer_for(app).issue(
        client_id=enrolled["client_id"], client_name="hospital-a", key_epoch=1, role="server"
    )

    response = await api.get("/v1/keys/secret-context", headers=bearer(other_role.token))

    assert_problem(response, 403, "token_wrong_role")


async def test_forged_token_is_refused(api: httpx.AsyncClient) -> None:
    enrolled = await enroll(api)
    from keyauth.tokens import generate_signing_key

    forged = TokenSigner(generate_signing_key()).issue(
        client_id=enrolled["client_id"], client_name="hospital-a", key_epoch=1
    )

    response = await api.get("/v1/keys/secret-context", headers=bearer(forged.token))

    assert_problem(response, 401, "token_invalid")


@pytest.mark.parametrize(
    ("epoch", "status", "code"),
    [
        ("0", 422, "request_invalid"),
        ("-1", 422, "request_invalid"),
        ("abc", 422, "request_invalid"),
        ("99999999999", 422, "request_invalid"),
        ("7", 404, "key_epoch_not_found"),
    ],
)
async def test_bad_epoch_query(api: httpx.AsyncClient, epoch: str, status: int, code: str) -> None:
    token = await access_token(api, await enroll(api))

    secret = await api.get(f"/v1/keys/secret-context?epoch={epoch}", headers=bearer(token))
    public = await api.get(f"/v1/keys/public-context?epoch={epoch}")
    key_id = await api.get(f"/v1/keys/key-id?epoch={epoch}")

    assert_problem(secret, status, code)
    assert_problem(public, status, code)
    assert_problem(key_id, status, code)


# Bodies: size, syntax, media type


@pytest.mark.parametrize("path", ["/v1/enroll", "/v1/token", "/v1/enrollment-tokens"])
@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"null",
        b"[]",
        b'"token"',
        b"1e999",
        b'{"token": null}',
        b'{"token": 1}',
        b'{"token": "\\u0000"}',
        b'{"token": "\\ud800", "client_secret": "\\udfff", "client_name": "\\ud800"}',
        b'{"client_id": "' + b"i" * 100 + b'", "client_secret": "s"}',
        b'{"token": "' + b"a" * 600 + b'"}',
        b'{"token": "a", "token": "b", "extra": 1}',
        b"[" * 5000 + b"]" * 5000,
        b"\xff\xfe\x00",
    ],
)
async def test_malformed_bodies_get_a_clear_4xx(
    api: httpx.AsyncClient, path: str, content: bytes
) -> None:
    headers = {"Content-Type": "application/json", **ADMIN}

    response = await api.post(path, content=content, headers=headers)

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (await api.get("/v1/clients", headers=ADMIN)).json() == []


async def test_invalid_json_is_a_bad_request(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/enroll", content=b'{"token": ', headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 400, "body_malformed")


async def test_non_json_media_type_is_unsupported(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/enroll", content=b'{"token": "x"}', headers={"Content-Type": "text/plain"}
    )

    assert_problem(response, 415, "unsupported_media_type")


async def test_validation_errors_never_echo_the_input(api: httpx.AsyncClient) -> None:
    secret = "s3cr3t-" + "q" * 600

    response = await api.post("/v1/token", json={"client_id": "c", "client_secret": secret})

    problem = assert_problem(response, 422, "request_invalid")
    assert "client_secret" in problem["detail"]
    assert "s3cr3t" not in response.text


async def test_declared_oversized_body_is_refused_unread(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/enroll",
        content=b"{" + b" " * 20_000 + b"}",
        headers={"Content-Type": "application/json"},
    )

    problem = assert_problem(response, 413, "body_too_large")
    assert "16384" in problem["detail"]


async def test_streamed_oversized_body_is_refused(api: httpx.AsyncClient) -> None:
    sent: list[int] = []

    async def chunks() -> Any:
        for _ in range(1000):  # 1 MB in 1 kB chunks, no Content-Length
            sent.append(1)
            yield b"x" * 1024

    response = await api.post(
        "/v1/enroll", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 413, "body_too_large")
    assert len(sent) < 100, "the body must not be read to its end"


async def test_middleware_refuses_an_invalid_content_length() -> None:
    called: list[bool] = []
    messages: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(True)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"1x")]}
    await BodySizeLimitMiddleware(app, max_body_bytes=1024)(scope, receive, send)

    assert called == []
    assert messages[0]["status"] == 400


async def test_unknown_route_and_method_are_problems(api: httpx.AsyncClient) -> None:
    missing = await api.get("/v1/nothing-here")
    wrong_method = await api.put("/v1/enroll", json={"token": "x"})

    assert_problem(missing, 404, "not_found")
    assert_problem(wrong_method, 405, "method_not_allowed")
    assert "POST" in wrong_method.headers["allow"]


async def test_requests_before_startup_are_unavailable(app: FastAPI) -> None:
    # No lifespan: the state is not open.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/healthz")

    assert_problem(response, 503, "not_ready")
