"""Startup against keyauth: fetching the public material with retries, and revocations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.app import create_app
from fl_server.errors import KeyauthUnavailableError, StartupError
from fl_server.keyauth_client import KeyauthClient
from fl_server.material import KeyauthMaterial
from fl_server.service import ServerService
from fl_server.store import MemoryStore
from keyauth.tokens import public_key_to_pem
from tests.fl_server.helpers import make_settings, mint_token

pytestmark = pytest.mark.anyio


class FakeKeyauth:
    """keyauth's public endpoints, failing the first ``down`` requests."""

    def __init__(self, keys: crypto.KeyMaterial, key: Ed25519PrivateKey, down: int = 0) -> None:
        self.keys = keys
        self.pem = public_key_to_pem(key)
        self.down = down
        self.revoked: list[str] | None = []
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(str(request.url))
        if self.down:
            self.down -= 1
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/v1/keys/public-context":
            epoch = int(request.url.params.get("epoch", "3"))
            if epoch not in (1, 3):
                return httpx.Response(404, json={"code": "key_epoch_not_found"})
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
                    "key_epoch": 3,
                    "profile": "test-n2048",
                },
            )
        if path == "/v1/revocations" and self.revoked is not None:
            return httpx.Response(200, json={"revoked": self.revoked})
        return httpx.Response(404, json={"code": "not_found"})


@pytest.fixture
def fake(keys: crypto.KeyMaterial, signing_key: Ed25519PrivateKey) -> FakeKeyauth:
    return FakeKeyauth(keys, signing_key)


def client_for(fake: FakeKeyauth, tmp_path: Path, **overrides: object) -> KeyauthClient:
    settings = make_settings(tmp_path, keyauth_retry_delay=0.01, **overrides)
    return KeyauthClient(settings, transport=httpx.MockTransport(fake))


async def test_fetches_the_current_epoch_or_the_one_asked_for(
    fake: FakeKeyauth, tmp_path: Path
) -> None:
    client = client_for(fake, tmp_path)
    current = await client.fetch_material(None)
    pinned = await client.fetch_material(1)
    await client.aclose()
    assert (current.key_epoch, pinned.key_epoch) == (3, 1)
    assert current.profile == "test-n2048"
    assert current.public_context == fake.keys.public_context
    assert current.verification_key_pem == fake.pem


async def test_retries_while_keyauth_is_down(fake: FakeKeyauth, tmp_path: Path) -> None:
    fake.down = 3
    client = client_for(fake, tmp_path, keyauth_attempts=5)
    material = await client.fetch_material(None)
    await client.aclose()
    assert material.key_epoch == 3
    assert len(fake.requests) == 5


async def test_gives_up_with_a_clear_error(fake: FakeKeyauth, tmp_path: Path) -> None:
    fake.down = 100
    client = client_for(fake, tmp_path, keyauth_attempts=3)
    with pytest.raises(KeyauthUnavailableError, match=r"after 3 attempts.*FLSERVER_KEYAUTH_URL"):
        await client.fetch_material(None)
    await client.aclose()


async def test_an_unknown_epoch_fails_at_once(fake: FakeKeyauth, tmp_path: Path) -> None:
    client = client_for(fake, tmp_path, keyauth_attempts=5)
    with pytest.raises(StartupError, match="404"):
        await client.fetch_material(7)
    await client.aclose()
    assert len(fake.requests) == 1


async def test_revocations_are_polled_into_the_service(
    fake: FakeKeyauth,
    tmp_path: Path,
    material: KeyauthMaterial,
    signing_key: Ed25519PrivateKey,
) -> None:
    service = ServerService(make_settings(tmp_path), material, store=MemoryStore())
    client = client_for(fake, tmp_path)
    fake.revoked = ["client-x"]
    poller = asyncio.create_task(client.poll_revocations(service.set_revoked, 0.01))
    await asyncio.sleep(0.1)
    with pytest.raises(Exception, match="revoked") as info:
        service.authenticate(mint_token(signing_key, "client-x"))
    assert getattr(info.value, "code", None) == "client_revoked"

    fake.revoked = None  # keyauth without a revocation list: polling stops
    await asyncio.wait_for(poller, 1)
    await client.aclose()
    service.close()


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
