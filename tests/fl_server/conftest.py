"""Fixtures for the fl_server tests: small CKKS keys, a token key, a layout, a test hospital."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.material import KeyauthMaterial
from keyauth.tokens import public_key_to_pem
from tests.fl_server.helpers import EPOCH, LAYOUT_TENSORS, PROFILE, Hospital


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
    )


@pytest.fixture(scope="session")
def layout(profile: crypto.CkksProfile) -> crypto.ModelLayout:
    return crypto.build_layout(LAYOUT_TENSORS, profile.block_size)


@pytest.fixture(scope="session")
def hospital(
    keys: crypto.KeyMaterial, profile: crypto.CkksProfile, layout: crypto.ModelLayout
) -> Hospital:
    return Hospital(crypto.ClientCipher(keys.secret_context, profile), layout)
