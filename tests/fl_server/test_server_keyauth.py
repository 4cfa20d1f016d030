"""Key material from keyauth: the token key and each epoch's context, retried and cached;
jobs bound to the epoch current at their creation; revocations."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.app import create_app
from fl_server.auth import TokenAuth
from fl_server.errors import KeyauthUnavailableError, StartupError
from fl_server.keyauth_client import KeyauthClient, KeyauthMaterialSource
from fl_server.material import TokenKey
from fl_server.settings import ServerSettings
from hefl_wire import KeyIdStatement
from keyauth.tokens import TokenSigner, public_key_to_pem
from tests.fl_server.helpers import admin_token, make_settings, mint_token, spec_body

pytestmark = pytest.mark.anyio


class FakeKeyauth:
    """keyauth's public endpoints, failing the first ``down`` requests.

    ``epochs`` are the key epochs it knows; ``current`` is the one a new job binds;
    ``key_ids`` the key id it states for each (``key_id_for``), signed by ``signer``
    (keyauth's token key unless a test swaps it).
    """

    def __init__(self, keys: crypto.KeyMaterial, key: Ed25519PrivateKey, down: int = 0) -> None:
        self.keys = keys
        self.pem = public_key_to_pem(key)
        self.signer = TokenSigner(key)
        self.down = down
        self.epochs = {1, 3}
        self.current = 3
        self.key_ids: dict[int, str] = {}
        self.revoked: list[str] | None = []
        self.requests: list[httpx.Request] = []

    def key_id_for(self, epoch: int) -> str:
        return self.key_ids.get(epoch, f"{epoch:064x}")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            self.down -= 1
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path in ("/v1/keys/public-context", "/v1/keys/key-id"):
            epoch = int(request.url.params.get("epoch", str(self.current)))
            if epoch not in self.epochs:
                return httpx.Response(404, json={"code": "key_epoch_not_found"})
            if path == "/v1/keys/key-id":
                stated = KeyIdStatement(epoch, "test-n2048", self.key_id_for(epoch))
                body = {**asdict(stated), "statement": self.signer.sign_statement(stated)}
                return httpx.Response(200, json=body)
            headers = {"X-Hefl-Key-Epoch": str(epoch), "X-Hefl-Profile": "test-n2048"}
            return httpx.Response(200, content=self.keys.public_context, headers=headers)
        if path == "/v1/keys/verification-key":
            return httpx.Response(
                200,
                json={
                    "algorithm": "EdDSA",
                    "issuer": "hefl-keyauth",
                    "audience": "hefl",
                    "public_key_pem": self.pem,
                    "key_epoch": self.current,
                    "profile": "test-n2048",
                },
            )
        if path == "/v1/revocations" and self.revoked is not None:
            etag = f'"{len(self.revoked)}-{hash(tuple(self.revoked))}"'
            if request.headers.get("If-None-Match") == etag:
                return httpx.Response(304, headers={"ETag": etag})
            return httpx.Response(200, json={"revoked": self.revoked}, headers={"ETag": etag})
        return httpx.Response(404, json={"code": "not_found"})

    def fetches(self, path: str) -> list[str]:
        return [str(r.url) for r in self.requests if r.url.path == path]

    def context_fetches(self) -> list[str]:
        return self.fetches("/v1/keys/public-context")


@pytest.fixture
def fake(keys: crypto.KeyMaterial, signing_key: Ed25519PrivateKey) -> FakeKeyauth:
    return FakeKeyauth(keys, signing_key)


def client_for(fake: FakeKeyauth, tmp_path: Path, **overrides: object) -> KeyauthClient:
    settings = make_settings(tmp_path, keyauth_retry_delay=0.01, **overrides)
    return KeyauthClient(settings, transport=httpx.MockTransport(fake))


async def test_fetches_the_token_key_and_the_current_epoch_or_the_one_asked_for(
    fake: FakeKeyauth, tmp_path: Path
) -> None:
    client = client_for(fake, tmp_path)
    key = await client.fetch_token_key()
    current = await client.fetch_context(None)
    pinned = await client.fetch_context(1)
    await client.aclose()
    assert (current.key_epoch, pinned.key_epoch) == (3, 1)
    assert current.profile == "test-n2048"
    assert current.public_context == fake.keys.public_context
    assert key == TokenKey(fake.pem, "hefl-keyauth", "hefl")


async def test_retries_while_keyauth_is_down(fake: FakeKeyauth, tmp_path: Path) -> None:
    fake.down = 3
    client = client_for(fake, tmp_path, keyauth_attempts=5)
    context = await client.fetch_context(None)
    await client.aclose()
    assert context.key_epoch == 3
    assert len(fake.requests) == 4


async def test_gives_up_with_a_clear_error(fake: FakeKeyauth, tmp_path: Path) -> None:
    fake.down = 100
    client = client_for(fake, tmp_path, keyauth_attempts=3)
    with pytest.raises(KeyauthUnavailableError, match=r"after 3 attempts.*FLSERVER_KEYAUTH_URL"):
        await client.fetch_token_key()
    await client.aclose()


async def test_an_unknown_epoch_fails_at_once(fake: FakeKeyauth, tmp_path: Path) -> None:
    client = client_for(fake, tmp_path, keyauth_attempts=5)
    with pytest.raises(StartupError, match="404"):
        await client.fetch_context(7)
    await client.aclose()
    assert len(fake.requests) == 1


async def test_the_source_fetches_each_epoch_once_and_the_current_one_each_time(
    fake: FakeKeyauth, tmp_path: Path
) -> None:
    source = KeyauthMaterialSource(client_for(fake, tmp_path))

    first = await source.epoch_context(1)
    again = await source.epoch_context(1)
    current = await source.current_context()
    fake.current = 1
    rotated = await source.current_context()
    await source.aclose()

    assert first is again
    assert (current.key_epoch, rotated.key_epoch) == (3, 1)
    assert len(fake.context_fetches()) == 3


async def test_revocations_are_polled_into_token_checks(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    auth = TokenAuth(TokenKey(fake.pem))
    client = client_for(fake, tmp_path)
    fake.revoked = ["client-x"]
    poller = asyncio.create_task(client.poll_revocations(auth.set_revoked, 0.01))
    await asyncio.sleep(0.1)
    with pytest.raises(Exception, match="revoked") as info:
        auth.client(mint_token(signing_key, "client-x"))
    assert getattr(info.value, "code", None) == "client_revoked"
    assert auth.client(mint_token(signing_key, "client-y")).client_id == "client-y"

    fake.revoked = None  # keyauth without a revocation list: polling stops
    await asyncio.wait_for(poller, 1)
    await client.aclose()


async def test_revocations_are_asked_for_with_the_etag_and_304_changes_nothing(
    fake: FakeKeyauth, tmp_path: Path
) -> None:
    # Prepare
    seen: list[frozenset[str]] = []
    client = client_for(fake, tmp_path)
    fake.revoked = ["client-x"]

    # Execute: a few polls of an unchanged list, then a revocation, then a few more.
    poller = asyncio.create_task(client.poll_revocations(seen.append, 0.01))
    await asyncio.sleep(0.1)
    fake.revoked = ["client-x", "client-y"]
    await asyncio.sleep(0.1)
    poller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poller
    await client.aclose()

    # Assert: the list is handed on when it changes only; every later ask names it.
    polls = [r for r in fake.requests if r.url.path == "/v1/revocations"]
    assert seen == [frozenset({"client-x"}), frozenset({"client-x", "client-y"})]
    assert len(polls) > 4
    assert "If-None-Match" not in polls[0].headers
    assert all("If-None-Match" in r.headers for r in polls[1:])


async def test_keyauth_down_is_logged_once_and_the_revoked_set_stays(
    fake: FakeKeyauth,
    tmp_path: Path,
    signing_key: Ed25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = TokenAuth(TokenKey(fake.pem))
    client = client_for(fake, tmp_path)
    fake.revoked = ["client-x"]

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)

    with caplog.at_level(logging.INFO, logger="fl_server.keyauth"):
        poller = asyncio.create_task(client.poll_revocations(auth.set_revoked, 0.01))
        await until(lambda: len(fake.requests) > 0)
        fake.down = 10
        await until(lambda: fake.down == 5)
        with pytest.raises(Exception, match="revoked") as info:
            auth.client(mint_token(signing_key, "client-x"))
        await until(lambda: any("refreshed again" in r.getMessage() for r in caplog.records))
        poller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poller
    await client.aclose()

    messages = [r.getMessage() for r in caplog.records]
    assert getattr(info.value, "code", None) == "client_revoked"
    assert fake.down == 0
    assert sum("could not refresh revocations" in m for m in messages) == 1
    assert sum("refreshed again" in m for m in messages) == 1


def test_revocations_are_refreshed_twice_a_second_by_default(tmp_path: Path) -> None:
    assert ServerSettings(state_dir=tmp_path).revocation_refresh == 0.5


async def test_startup_fails_clearly_when_keyauth_is_unreachable(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "state",
        keyauth_url="http://127.0.0.1:9",
        keyauth_attempts=2,
        keyauth_retry_delay=0.01,
    )
    app = create_app(settings)
    with pytest.raises(KeyauthUnavailableError, match=r"127\.0\.0\.1:9"):
        async with app.router.lifespan_context(app):
            pass
    assert not (tmp_path / "state").exists()


async def serving(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """fl_server on ``tmp_path / "state"`` with ``fake`` as keyauth: a client, admin headers."""
    settings = make_settings(tmp_path / "state", keyauth_retry_delay=0.01, keyauth_attempts=2)
    source = KeyauthMaterialSource(KeyauthClient(settings, transport=httpx.MockTransport(fake)))
    app = create_app(settings, keyauth_material=source)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as http:
            yield http, {"Authorization": f"Bearer {admin_token(signing_key)}"}


async def test_each_job_binds_the_epoch_current_at_its_creation_and_keeps_it(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    # Prepare: one job on epoch 3; keyauth rotates to 4; a second job.
    async for http, admin in serving(fake, tmp_path, signing_key):
        first = await http.post("/v1/jobs", content=spec_body("first"), headers=admin)
        fake.epochs.add(4)
        fake.current = 4
        second = await http.post("/v1/jobs", content=spec_body("second"), headers=admin)
        assert (first.status_code, second.status_code) == (201, 201)
        assert (first.json()["key_epoch"], second.json()["key_epoch"]) == (3, 4)

    # Execute: a restart fetches each job's own epoch.
    fake.requests.clear()
    async for http, admin in serving(fake, tmp_path, signing_key):
        jobs: list[dict[str, Any]] = (await http.get("/v1/jobs", headers=admin)).json()

    # Assert
    assert [(j["name"], j["key_epoch"]) for j in jobs] == [("first", 3), ("second", 4)]
    assert sorted(fake.context_fetches()) == [
        "http://127.0.0.1:8700/v1/keys/public-context?epoch=3",
        "http://127.0.0.1:8700/v1/keys/public-context?epoch=4",
    ]


async def test_a_job_whose_epoch_keyauth_no_longer_knows_is_left_out_and_reported(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async for http, admin in serving(fake, tmp_path, signing_key):
        await http.post("/v1/jobs", content=spec_body("old"), headers=admin)
        fake.epochs.add(4)
        fake.current = 4
        await http.post("/v1/jobs", content=spec_body("new"), headers=admin)
    fake.epochs.discard(3)

    async for http, admin in serving(fake, tmp_path, signing_key):
        status = (await http.get("/v1/status", headers=admin)).json()
        old = await http.get("/v1/jobs/old", headers=admin)
        again = await http.post("/v1/jobs", content=spec_body("old"), headers=admin)

    assert [j["name"] for j in status["jobs"]] == ["new"]
    (failed,) = status["failed_jobs"]
    assert failed["name"] == "old"
    assert "key epoch 3" in failed["error"]
    assert "404" in failed["error"]
    assert (old.status_code, old.json()["code"]) == (500, "state_invalid")
    assert (again.status_code, again.json()["code"]) == (500, "state_invalid")


async def test_creating_a_job_while_keyauth_is_down_is_503_and_creates_nothing(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async for http, admin in serving(fake, tmp_path, signing_key):
        fake.down = 100
        answer = await http.post("/v1/jobs", content=spec_body(), headers=admin)
        jobs = (await http.get("/v1/jobs", headers=admin)).json()

    assert answer.status_code == 503
    assert answer.json()["code"] == "keyauth_unavailable"
    assert int(answer.headers["Retry-After"]) >= 1
    assert jobs == []
    assert list((tmp_path / "state" / "jobs").iterdir()) == []


def test_a_remembered_token_of_a_client_revoked_since_is_refused(
    fake: FakeKeyauth, signing_key: Ed25519PrivateKey
) -> None:
    # Prepare: the token is verified, so remembered
    auth = TokenAuth(TokenKey(fake.pem))
    token = mint_token(signing_key, "client-x")
    assert auth.client(token).client_id == "client-x"

    # Execute
    auth.set_revoked({"client-x"})
    with pytest.raises(Exception, match="revoked") as info:
        auth.client(token)
    auth.set_revoked(set())

    # Assert: refused while listed, and served again once keyauth lists it no more
    assert getattr(info.value, "code", None) == "client_revoked"
    assert auth.client(token).client_id == "client-x"
