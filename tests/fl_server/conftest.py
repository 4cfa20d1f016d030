"""Fixtures for the fl_server tests: small CKKS keys, a token key, a layout, a test hospital."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.job_service import JobService
from fl_server.material import KeyauthMaterial
from hefl_wire import AccessClaims, key_id_of
from keyauth.tokens import public_key_to_pem
from tests.fl_server.api import Api, open_api
from tests.fl_server.helpers import (
    EPOCH,
    LAYOUT_TENSORS,
    PROFILE,
    Hospital,
    client_claims,
    open_job,
)

MakeJob = Callable[..., JobService]


@pytest.fixture(autouse=True)
def _no_flserver_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read FLSERVER_* from the environment: the runner's must not leak into tests.
    for name in list(os.environ):
        if name.startswith("FLSERVER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def profile() -> crypto.CkksProfile:
    return crypto.get_profile(PROFILE)


@pytest.fixture(scope="session")
def keys(profile: crypto.CkksProfile) -> crypto.KeyMaterial:
    return crypto.generate_key_material(profile)


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def material(keys: crypto.KeyMaterial, signing_key: Ed25519PrivateKey) -> KeyauthMaterial:
    return KeyauthMaterial(
        public_context=keys.public_context,
        key_epoch=EPOCH,
        profile=PROFILE,
        verification_key_pem=public_key_to_pem(signing_key),
        key_id=key_id_of(keys.secret_context),
    )


@pytest.fixture(scope="session")
def layout(profile: crypto.CkksProfile) -> crypto.ModelLayout:
    return crypto.build_layout(LAYOUT_TENSORS, profile.block_size)


@pytest.fixture(scope="session")
def hospital(
    keys: crypto.KeyMaterial, profile: crypto.CkksProfile, layout: crypto.ModelLayout
) -> Hospital:
    return Hospital(crypto.ClientCipher(keys.secret_context, profile), layout)


@pytest.fixture
def make_job(tmp_path: Path, material: KeyauthMaterial) -> Iterator[MakeJob]:
    """Opens job services (``open_job``: settings or spec keys); closes them at the end."""
    opened: list[JobService] = []

    def make(state_dir: Path | None = None, **overrides: Any) -> JobService:
        job = open_job(material, state_dir or tmp_path / "state", **overrides)
        opened.append(job)
        return job

    yield make
    for job in opened:
        job.close()


@pytest.fixture
def client(material: KeyauthMaterial, signing_key: Ed25519PrivateKey) -> AccessClaims:
    """client-a's verified claims, as a route hands them to a job."""
    return client_claims(material, signing_key)


@pytest.fixture
async def api(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey
) -> AsyncIterator[Api]:
    """The app with job ``JOB`` created, and an HTTP client on it."""
    async for opened in open_api(tmp_path, material, signing_key):
        yield opened
