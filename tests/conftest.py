"""Shared fixtures: small CKKS key material, generated once per session."""

from __future__ import annotations

import pytest

import crypto


@pytest.fixture(scope="session")
def small_profile() -> crypto.CkksProfile:
    return crypto.get_profile("test-n2048")


@pytest.fixture(scope="session")
def small_keys(small_profile: crypto.CkksProfile) -> crypto.KeyMaterial:
    return crypto.generate_key_material(small_profile)


@pytest.fixture(scope="session")
def small_client(
    small_keys: crypto.KeyMaterial, small_profile: crypto.CkksProfile
) -> crypto.ClientCipher:
    return crypto.ClientCipher(small_keys.secret_context, small_profile)


@pytest.fixture(scope="session")
def small_server(
    small_keys: crypto.KeyMaterial, small_profile: crypto.CkksProfile
) -> crypto.ServerCipher:
    return crypto.ServerCipher(small_keys.public_context, small_profile)
