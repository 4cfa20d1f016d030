"""Property-based fuzzing of both services from their own OpenAPI schemas (schemathesis over
live uvicorn): no 5xx, and every refusal is a problem+json with a stable code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis

from harness.fuzz import fuzz_api
from harness.live import live_job

pytestmark = pytest.mark.e2e

ADMIN_KEY = "fuzz-admin-key-0123456789abcdef0123"
EXAMPLES = 40


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("fuzz")
    # A job in training, so the model and update routes do their real work.
    with live_job(root, "fuzz", n_params=3000, seed=0, admin_key=ADMIN_KEY) as job:
        keyauth, server = job.keyauth, job.server
        before = httpx.get(job.url("/model"), headers=job.party.auth).content
        yield {
            "keyauth": keyauth.url,
            "server": server.url,
            "auth": job.party.auth,
            "admin": {"Authorization": f"Bearer {job.admin_token}"},
        }
        # Nothing the fuzzer sent changed the model (it never had a valid update).
        assert httpx.get(job.url("/model"), headers=job.party.auth).content == before
        assert server.alive()
        assert keyauth.alive()


@pytest.fixture(scope="module")
def keyauth_schema(world: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(f"{world['keyauth']}/openapi.json")


@pytest.fixture(scope="module")
def server_schema(world: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(f"{world['server']}/openapi.json")


def test_keyauth_never_answers_5xx(keyauth_schema: Any, world: dict[str, Any]) -> None:
    admin = {"X-Admin-Key": ADMIN_KEY}
    with_credentials = fuzz_api(keyauth_schema, {**world["auth"], **admin}, EXAMPLES)
    without = fuzz_api(keyauth_schema, {}, EXAMPLES)
    assert len(with_credentials) >= 10
    assert sum(with_credentials.values()) + sum(without.values()) >= 10 * EXAMPLES


def test_fl_server_never_answers_5xx(server_schema: Any, world: dict[str, Any]) -> None:
    with_credentials = fuzz_api(server_schema, world["auth"], EXAMPLES)
    as_admin = fuzz_api(server_schema, world["admin"], EXAMPLES)
    without = fuzz_api(server_schema, {}, EXAMPLES)
    assert len(with_credentials) >= 10
    assert len(as_admin) >= 10
    assert sum(with_credentials.values()) + sum(without.values()) >= 10 * EXAMPLES
