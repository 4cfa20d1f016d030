"""Key ids and the revocation list's ETag, through the ASGI app and the authority."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from hefl_wire import KeyIdStatement, KeyIdVerifier, KeyStatementError, TokenVerifier
from keyauth.app import create_app
from keyauth.service import KeyAuthority
from keyauth.settings import KeyauthSettings
from keyauth.store import InMemoryStore, SqliteStore
from tests.keyauth.keyauth_helpers import make_settings, started
from tests.keyauth.test_keyauth_api import ADMIN, access_token, bearer, enroll

pytestmark = pytest.mark.anyio


async def verifier_of(api: httpx.AsyncClient) -> KeyIdVerifier:
    return KeyIdVerifier((await api.get("/v1/keys/verification-key")).json()["public_key_pem"])


# The key id of an epoch


async def test_the_key_id_is_the_sha256_of_the_secret_context_as_served(
    api: httpx.AsyncClient,
) -> None:
    token = await access_token(api, await enroll(api))

    secret = await api.get("/v1/keys/secret-context", headers=bearer(token))
    answer = await api.get("/v1/keys/key-id")

    key_id = hashlib.sha256(secret.content).hexdigest()
    assert answer.status_code == 200
    body = answer.json()
    assert {k: body[k] for k in ("key_epoch", "profile", "key_id")} == {
        "key_epoch": 1,
        "profile": "test-n2048",
        "key_id": key_id,
    }
    assert secret.headers["X-Hefl-Key-Id"] == key_id
    stated = (await verifier_of(api)).verify(body["statement"], key_epoch=1)
    assert stated == KeyIdStatement(1, "test-n2048", key_id)


async def test_the_public_context_names_no_key_id(api: httpx.AsyncClient) -> None:
    # It is the same for every key of a profile: a key id beside it would be unverified.
    public = await api.get("/v1/keys/public-context")

    assert "X-Hefl-Key-Id" not in public.headers


async def test_each_epoch_has_its_own_key_id_and_keeps_it_after_rotation(
    api: httpx.AsyncClient,
) -> None:
    first = (await api.get("/v1/keys/key-id")).json()
    await api.post("/v1/key-epochs", headers=ADMIN)
    second = (await api.get("/v1/keys/key-id")).json()
    first_again = (await api.get("/v1/keys/key-id", params={"epoch": 1})).json()
    verifier = await verifier_of(api)

    assert (first["key_epoch"], second["key_epoch"]) == (1, 2)
    assert second["key_id"] != first["key_id"]
    assert first_again["key_id"] == first["key_id"]
    assert verifier.verify(second["statement"], key_epoch=2).key_id == second["key_id"]
    with pytest.raises(KeyStatementError, match="key epoch 2, not 1"):
        verifier.verify(second["statement"], key_epoch=1)


async def test_a_restart_states_the_same_key_id_and_a_new_state_directory_another(
    tmp_path: Path,
) -> None:
    # Prepare: keyauth on state A, restarted on A, then started on a fresh state B.
    state_a = make_settings(tmp_path / "a")
    async with started(create_app(state_a)) as api:
        before = (await api.get("/v1/keys/key-id")).json()
    async with started(create_app(state_a)) as api:
        after = (await api.get("/v1/keys/key-id")).json()
    async with started(create_app(make_settings(tmp_path / "b"))) as api:
        fresh = (await api.get("/v1/keys/key-id")).json()
        fresh_key = (await api.get("/v1/keys/verification-key")).json()["public_key_pem"]

    # Assert: same epoch number, other keys, another id, signed by another key.
    assert after["key_id"] == before["key_id"]
    assert fresh["key_epoch"] == before["key_epoch"] == 1
    assert fresh["key_id"] != before["key_id"]
    with pytest.raises(KeyStatementError, match="Signature verification failed"):
        KeyIdVerifier(fresh_key).verify(before["statement"])


def test_an_epoch_stored_before_key_ids_gets_its_id_from_its_stored_bytes(
    tmp_path: Path,
) -> None:
    # Nothing is migrated: the id is derived from the bytes the store checks at load.
    settings: KeyauthSettings = make_settings(tmp_path / "state")
    store = SqliteStore(settings.state_dir)
    KeyAuthority(settings, store)
    store.close()
    reopened = SqliteStore(settings.state_dir)
    try:
        epoch = KeyAuthority(settings, reopened).key_epoch(1)
        stored = (settings.state_dir / "keys" / "epoch-000001.secret-context").read_bytes()
    finally:
        reopened.close()

    assert epoch.key_id == hashlib.sha256(stored).hexdigest()


async def test_a_statement_is_no_access_token_and_an_access_token_no_statement(
    api: httpx.AsyncClient,
) -> None:
    token = await access_token(api, await enroll(api))
    statement = (await api.get("/v1/keys/key-id")).json()["statement"]
    pem = (await api.get("/v1/keys/verification-key")).json()["public_key_pem"]

    as_token = await api.get("/v1/keys/secret-context", headers=bearer(statement))

    assert as_token.status_code == 401
    assert as_token.json()["code"] == "token_invalid"
    with pytest.raises(KeyStatementError, match='missing the "purpose" claim'):
        KeyIdVerifier(pem).verify(token)
    assert TokenVerifier(pem).verify(token).key_epoch == 1


# The revocation list's ETag


async def test_the_revocation_list_answers_304_while_it_is_unchanged(
    api: httpx.AsyncClient,
) -> None:
    # Prepare
    enrolled = await enroll(api)
    first = await api.get("/v1/revocations")

    # Execute
    unchanged = await api.get("/v1/revocations", headers={"If-None-Match": first.headers["ETag"]})
    await api.delete(f"/v1/clients/{enrolled['client_id']}", headers=ADMIN)
    changed = await api.get("/v1/revocations", headers={"If-None-Match": first.headers["ETag"]})
    again = await api.get("/v1/revocations", headers={"If-None-Match": changed.headers["ETag"]})

    # Assert
    assert (first.status_code, first.json()) == (200, {"revoked": []})
    assert first.headers["Cache-Control"] == "no-cache"
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    assert unchanged.headers["ETag"] == first.headers["ETag"]
    assert (changed.status_code, changed.json()) == (200, {"revoked": [enrolled["client_id"]]})
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert again.status_code == 304


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ("{etag}", 304),
        ("W/{etag}", 304),
        ('"other", {etag}', 304),
        ("*", 304),
        ('"other"', 200),
        ("", 200),
        ("garbage", 200),
    ],
)
async def test_if_none_match_is_compared_as_http_says(
    api: httpx.AsyncClient, if_none_match: str, status: int
) -> None:
    etag = (await api.get("/v1/revocations")).headers["ETag"]

    answer = await api.get(
        "/v1/revocations", headers={"If-None-Match": if_none_match.format(etag=etag)}
    )

    assert answer.status_code == status


def test_every_keyauth_over_the_same_state_names_the_list_alike(
    settings: KeyauthSettings,
) -> None:
    # The ETag is the list's content: a server polling several keyauth workers gets 304.
    store = InMemoryStore()
    one, two = KeyAuthority(settings, store), KeyAuthority(settings, store)
    token = one.issue_enrollment_token("hospital-a").token
    client = one.enroll(token).client_id
    one.revoke_client(client)

    assert one.revocations() == two.revocations()
    assert one.revocations().client_ids == (client,)
