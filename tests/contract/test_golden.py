"""The wire contract, frozen: both OpenAPI schemas and a set of problem answers, byte for byte.

The golden files under ``golden/`` were recorded before the structure change of issue 11,
and fl_server's again for issue 12, which moved its surface under ``/v1/jobs`` on purpose
(``HEFL_UPDATE_GOLDEN=1 pytest tests/contract/test_golden.py`` rewrites them). A change
that alters what either service says on the wire fails here; when the change is meant,
record the files again and say so in the commit.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

import crypto
from fl_server.app import create_app as create_server_app
from fl_server.material import KeyauthMaterial
from fl_server.settings import ServerSettings
from harness.studies import study_json, study_mapping
from keyauth.app import create_app as create_keyauth_app
from keyauth.settings import KeyauthSettings
from keyauth.tokens import TokenSigner, signing_key_from_pem
from tests.fl_server.helpers import Hospital

GOLDEN = Path(__file__).parent / "golden"
ADMIN_KEY = "golden-admin-key-0123456789abcdef"
PROFILE = "test-n2048"
JOB = "golden"
# The response headers that belong to the contract (date and server vary per run).
HEADERS = ("content-type", "www-authenticate", "retry-after", "cache-control", "allow")


def _compare(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HEFL_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from the recorded contract"


def _dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


@asynccontextmanager
async def _running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http


def _answer(response: httpx.Response) -> dict[str, Any]:
    out: dict[str, Any] = {"status": response.status_code}
    for name in HEADERS:
        if name in response.headers:
            out[name] = response.headers[name]
    out["body"] = response.text
    return out


def _keyauth_settings(tmp_path: Path) -> KeyauthSettings:
    return KeyauthSettings(
        state_dir=tmp_path / "keyauth", admin_key=SecretStr(ADMIN_KEY), profile=PROFILE
    )


def _server_settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings(
        state_dir=tmp_path / "server", client_updates_per_minute=0, revocation_refresh=0
    )


@pytest.fixture(autouse=True)
def _no_service_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("KEYAUTH_", "FLSERVER_")):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_openapi_schemas_are_unchanged(tmp_path: Path) -> None:
    keyauth_schema = create_keyauth_app(_keyauth_settings(tmp_path)).openapi()
    server_schema = create_server_app(_server_settings(tmp_path)).openapi()

    _compare("openapi-keyauth.json", _dump(keyauth_schema))
    _compare("openapi-fl_server.json", _dump(server_schema))


Request = Callable[[httpx.AsyncClient], Any]


@pytest.mark.anyio
async def test_problem_answers_are_unchanged(tmp_path: Path) -> None:
    # Prepare: a real key authority, an enrolled client with an access token, and a
    # server that trusts that key authority.
    answers: dict[str, dict[str, Any]] = {}
    admin = {"X-Admin-Key": ADMIN_KEY}
    async with _running(create_keyauth_app(_keyauth_settings(tmp_path))) as keyauth:

        async def ask(name: str, response: httpx.Response) -> None:
            answers[name] = _answer(response)

        # Execute: keyauth's refusals.
        await ask(
            "keyauth tokens without admin key",
            await keyauth.post("/v1/enrollment-tokens", json={"client_name": "a"}),
        )
        await ask(
            "keyauth tokens wrong admin key",
            await keyauth.post(
                "/v1/enrollment-tokens", json={"client_name": "a"}, headers={"X-Admin-Key": "x"}
            ),
        )
        await ask(
            "keyauth tokens bad name",
            await keyauth.post("/v1/enrollment-tokens", json={"client_name": "a b"}, headers=admin),
        )
        await ask(
            "keyauth tokens expiry out of range",
            await keyauth.post(
                "/v1/enrollment-tokens",
                json={"client_name": "a", "expires_in": 10**9},
                headers=admin,
            ),
        )
        await ask(
            "keyauth tokens unknown field",
            await keyauth.post(
                "/v1/enrollment-tokens", json={"client_name": "a", "x": 1}, headers=admin
            ),
        )
        await ask(
            "keyauth tokens not json",
            await keyauth.post(
                "/v1/enrollment-tokens",
                content=b"{",
                headers={**admin, "Content-Type": "application/json"},
            ),
        )
        await ask(
            "keyauth tokens body too large",
            await keyauth.post(
                "/v1/enrollment-tokens",
                content=b"x" * 20_000,
                headers={**admin, "Content-Type": "application/json"},
            ),
        )
        await ask(
            "keyauth enroll unknown token",
            await keyauth.post("/v1/enroll", json={"token": "no-such-token"}),
        )
        await ask(
            "keyauth token unknown client",
            await keyauth.post("/v1/token", json={"client_id": "nobody", "client_secret": "s"}),
        )
        await ask("keyauth secret context no token", await keyauth.get("/v1/keys/secret-context"))
        await ask(
            "keyauth secret context garbage token",
            await keyauth.get(
                "/v1/keys/secret-context", headers={"Authorization": "Bearer garbage"}
            ),
        )
        await ask(
            "keyauth secret context basic auth",
            await keyauth.get("/v1/keys/secret-context", headers={"Authorization": "Basic eDp5"}),
        )
        await ask(
            "keyauth public context no such epoch",
            await keyauth.get("/v1/keys/public-context", params={"epoch": 99}),
        )
        await ask(
            "keyauth public context bad epoch",
            await keyauth.get("/v1/keys/public-context", params={"epoch": "x"}),
        )
        await ask(
            "keyauth revoke unknown client",
            await keyauth.delete("/v1/clients/nobody", headers=admin),
        )
        await ask("keyauth unknown path", await keyauth.get("/v1/nothing"))
        await ask("keyauth wrong method", await keyauth.put("/v1/token"))

        issued = (
            await keyauth.post(
                "/v1/enrollment-tokens", json={"client_name": "hospital-a"}, headers=admin
            )
        ).json()
        enrolled = (await keyauth.post("/v1/enroll", json={"token": issued["token"]})).json()
        await ask(
            "keyauth enroll name taken",
            await keyauth.post(
                "/v1/enrollment-tokens", json={"client_name": "hospital-a"}, headers=admin
            ),
        )
        access = (
            await keyauth.post(
                "/v1/token",
                json={
                    "client_id": enrolled["client_id"],
                    "client_secret": enrolled["client_secret"],
                },
            )
        ).json()["access_token"]
        await ask(
            "keyauth enroll used token",
            await keyauth.post("/v1/enroll", json={"token": issued["token"]}),
        )
        await ask(
            "keyauth token wrong secret",
            await keyauth.post(
                "/v1/token", json={"client_id": enrolled["client_id"], "client_secret": "wrong"}
            ),
        )
        await ask(
            "keyauth secret context no such epoch",
            await keyauth.get(
                "/v1/keys/secret-context",
                params={"epoch": 99},
                headers={"Authorization": f"Bearer {access}"},
            ),
        )

        context = await keyauth.get("/v1/keys/public-context")
        key = (await keyauth.get("/v1/keys/verification-key")).json()
        material = KeyauthMaterial(
            public_context=context.content,
            key_epoch=int(context.headers["X-Hefl-Key-Epoch"]),
            profile=context.headers["X-Hefl-Profile"],
            verification_key_pem=key["public_key_pem"],
            issuer=key["issuer"],
            audience=key["audience"],
        )
        bearer = {"Authorization": f"Bearer {access}"}
        signer = TokenSigner(signing_key_from_pem(_signing_key(tmp_path)))
        admin_token = signer.issue(
            client_id="admin", client_name="admin", key_epoch=material.key_epoch, role="admin"
        ).token
        admin = {"Authorization": f"Bearer {admin_token}"}
        spec = study_json(JOB, profile=PROFILE).encode()
        job = f"/v1/jobs/{JOB}"
        server_app = create_server_app(_server_settings(tmp_path), keyauth_material=material)
        async with _running(server_app) as server:
            # Execute: fl_server's refusals of jobs: who may create them, and which specs.
            await ask("server jobs no token", await server.get("/v1/jobs"))
            await ask(
                "server create job client token",
                await server.post("/v1/jobs", content=spec, headers=bearer),
            )
            invalid = study_mapping("Not A Name", profile=PROFILE, staleness_b=3)
            await ask(
                "server create job invalid spec",
                await server.post("/v1/jobs", content=json.dumps(invalid), headers=admin),
            )
            await ask(
                "server create job not json",
                await server.post("/v1/jobs", content=b"{", headers=admin),
            )
            await ask(
                "server create job another profile",
                await server.post(
                    "/v1/jobs",
                    content=study_json("elsewhere", profile="n4096-s40").encode(),
                    headers=admin,
                ),
            )
            created = await server.post("/v1/jobs", content=spec, headers=admin)
            assert created.status_code == 201, created.text
            await ask(
                "server create job exists",
                await server.post(
                    "/v1/jobs",
                    content=study_json(JOB, profile=PROFILE, target_updates=5).encode(),
                    headers=admin,
                ),
            )
            await ask("server job unknown", await server.get("/v1/jobs/nobody", headers=bearer))
            await ask(
                "server model unknown job",
                await server.get("/v1/jobs/nobody/model", headers=bearer),
            )
            await ask("server model admin token", await server.get(f"{job}/model", headers=admin))
            await ask(
                "server pause client token", await server.post(f"{job}/pause", headers=bearer)
            )
            await ask("server resume not paused", await server.post(f"{job}/resume", headers=admin))

            # Execute: fl_server's refusals, before and after the job has a layout.
            await ask("server model before start", await server.get(f"{job}/model", headers=bearer))
            await ask("server layout before set", await server.get(f"{job}/layout", headers=bearer))
            await ask("server update no token", await server.post(f"{job}/updates", content=b"x"))
            await ask(
                "server update garbage token",
                await server.post(
                    f"{job}/updates", content=b"x", headers={"Authorization": "Bearer garbage"}
                ),
            )
            await ask(
                "server update before start",
                await server.post(f"{job}/updates", content=b"x", headers=bearer),
            )
            await ask("server slot before start", await server.post(f"{job}/slots", headers=bearer))
            await ask(
                "server lease before start", await server.post(f"{job}/leases", headers=bearer)
            )
            await ask(
                "server initial model before layout",
                await server.put(f"{job}/initial-model", content=b"x", headers=bearer),
            )
            await ask(
                "server metrics before start",
                await server.post(
                    f"{job}/metrics",
                    json={"version": 0, "metrics": {"accuracy": 0.5}},
                    headers=bearer,
                ),
            )
            await ask(
                "server layout not json",
                await server.put(f"{job}/layout", content=b"[[[", headers=bearer),
            )
            await ask(
                "server layout wrong block size",
                await server.put(
                    f"{job}/layout",
                    headers=bearer,
                    content=crypto.build_layout({"w": _zeros(10)}, 4096).to_json(),
                ),
            )
            await ask(
                "server model bad since",
                await server.get(f"{job}/model", params={"since": -1}, headers=bearer),
            )
            await ask(
                "server model form encoded",
                await server.post(
                    f"{job}/updates", headers={**bearer, "Content-Encoding": "br"}, content=b"x"
                ),
            )

            layout = crypto.build_layout({"w": _zeros(10)}, crypto.get_profile(PROFILE).block_size)
            await ask(
                "server layout set",
                await server.put(f"{job}/layout", content=layout.to_json(), headers=bearer),
            )
            await ask(
                "server layout conflict",
                await server.put(
                    f"{job}/layout",
                    headers=bearer,
                    content=crypto.build_layout({"v": _zeros(11)}, layout.block_size).to_json(),
                ),
            )
            await ask(
                "server initial model garbage",
                await server.put(
                    f"{job}/initial-model", content=b"not an envelope", headers=bearer
                ),
            )
            await ask(
                "server update before initial model",
                await server.post(f"{job}/updates", content=b"not an envelope", headers=bearer),
            )
            await ask(
                "server metrics invalid",
                await server.post(
                    f"{job}/metrics", json={"version": "x", "metrics": {}}, headers=bearer
                ),
            )
            await ask("server unknown path", await server.get("/v1/nothing"))

            secret = await keyauth.get("/v1/keys/secret-context", headers=bearer)
            cipher = crypto.ClientCipher(secret.content, crypto.get_profile(PROFILE))
            hospital = Hospital(cipher, layout, key_epoch=material.key_epoch)
            values = hospital.random_values(seed=1)
            await ask(
                "server initial model version 1",
                await server.put(
                    f"{job}/initial-model",
                    content=hospital.initial_model(values, version=1),
                    headers=bearer,
                ),
            )
            await ask(
                "server initial model",
                await server.put(
                    f"{job}/initial-model", content=hospital.initial_model(values), headers=bearer
                ),
            )
            await ask(
                "server initial model again",
                await server.put(
                    f"{job}/initial-model", content=hospital.initial_model(values), headers=bearer
                ),
            )
            fixed = uuid.UUID(int=7)
            for name, kwargs in [
                ("server update version ahead", {"base_version": 5}),
                ("server update other epoch", {"base_version": 0, "key_epoch": 7}),
                ("server update other layout", {"base_version": 0, "fingerprint": b"\1" * 32}),
                ("server update", {"base_version": 0, "update_id": fixed}),
                ("server update id reused", {"base_version": 0, "update_id": fixed}),
            ]:
                _, envelope = hospital.update(values, **kwargs)  # type: ignore[arg-type]
                await ask(
                    name, await server.post(f"{job}/updates", content=envelope, headers=bearer)
                )
            block = crypto.CipherBlock(3, cipher.encrypt_update_block(values[0]))
            outside = crypto.EncryptedUpdate(
                layout.fingerprint, 0, material.key_epoch, uuid.UUID(int=8), (block,)
            )
            await ask(
                "server update block out of range",
                await server.post(
                    f"{job}/updates", content=crypto.update_to_bytes(outside), headers=bearer
                ),
            )
            await ask(
                "server metrics version ahead",
                await server.post(
                    f"{job}/metrics",
                    json={"version": 5, "metrics": {"accuracy": 0.5}},
                    headers=bearer,
                ),
            )
            await ask(
                "server metrics bad name",
                await server.post(
                    f"{job}/metrics", json={"version": 0, "metrics": {"a b": 0.5}}, headers=bearer
                ),
            )
            await ask(
                "server metrics",
                await server.post(
                    f"{job}/metrics",
                    json={"version": 0, "metrics": {"accuracy": 0.5}},
                    headers=bearer,
                ),
            )
            await ask(
                "server update metrics invalid",
                await server.post(
                    f"{job}/updates",
                    content=b"x",
                    headers={**bearer, "X-Hefl-Metrics": '{"version":0,"metrics":{}}'},
                ),
            )
            await ask(
                "server model since ahead",
                await server.get(f"{job}/model", params={"since": 99}, headers=bearer),
            )

            # Execute: a paused job, then a done one.
            assert (await server.post(f"{job}/pause", headers=admin)).status_code == 200
            _, envelope = hospital.update(values, base_version=1, update_id=uuid.UUID(int=9))
            await ask(
                "server update paused",
                await server.post(f"{job}/updates", content=envelope, headers=bearer),
            )
            await ask("server slot paused", await server.post(f"{job}/slots", headers=bearer))
            await ask("server lease paused", await server.post(f"{job}/leases", headers=bearer))
            assert (await server.post(f"{job}/stop", headers=admin)).status_code == 200
            await ask(
                "server update done",
                await server.post(f"{job}/updates", content=envelope, headers=bearer),
            )
            await ask("server pause done", await server.post(f"{job}/pause", headers=admin))
            await ask("server resume done", await server.post(f"{job}/resume", headers=admin))

    # Assert: every answer is what the recorded contract says.
    _compare("problem-answers.json", _dump(answers))


def _signing_key(tmp_path: Path) -> bytes:
    """keyauth's token-signing key (PEM), as its store keeps it: to sign an admin token the
    way ``POST /v1/admin/token`` does (fl_server verifies it with the same public key)."""
    return (tmp_path / "keyauth" / "signing-key.pem").read_bytes()


def _zeros(n: int) -> Any:
    import numpy as np

    return np.zeros(n, np.float32)
