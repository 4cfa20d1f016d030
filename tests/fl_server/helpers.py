"""Helpers for the fl_server tests: a test hospital that encrypts and decrypts, token minting."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.service import ServerService
from fl_server.settings import ServerSettings

PROFILE = "test-n2048"
EPOCH = 1
# 5 x 1000 + 5 = 5005 parameters: three blocks of 2048 values.
LAYOUT_TENSORS: dict[str, Any] = {
    "fc.weight": np.zeros((5, 1000), np.float32),
    "fc.bias": np.zeros(5, np.float32),
}


def wait_published(service: ServerService, timeout: float = 10.0) -> None:
    """Wait until downloads serve every applied update (the worker publishes after a pause)."""
    deadline = time.monotonic() + timeout
    while True:
        status = service.status()
        if status.queued_updates == 0 and status.published_version == status.version:
            return
        assert time.monotonic() < deadline, "the model was not published"
        time.sleep(0.01)


def make_settings(state_dir: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "target_updates": 1000,
        "client_updates_per_minute": 0,
        "revocation_refresh": 0,
    }
    values.update(overrides)
    return ServerSettings(**values)


def mint_token(
    key: Ed25519PrivateKey,
    client_id: str = "client-a",
    *,
    name: str | None = None,
    role: str = "client",
    epoch: int = EPOCH,
    lifetime: float = 300,
    **claims: Any,
) -> str:
    """A keyauth-style access token signed with ``key`` (PyJWT, EdDSA)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "hefl-keyauth",
        "aud": "hefl",
        "sub": client_id,
        "name": name or f"hospital-{client_id}",
        "role": role,
        "epoch": epoch,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    payload.update(claims)
    return jwt.encode(payload, key, algorithm="EdDSA")


@dataclass
class Hospital:
    """A test client: holds the secret key the server never sees."""

    cipher: crypto.ClientCipher
    layout: crypto.ModelLayout
    key_epoch: int = EPOCH

    @property
    def profile(self) -> crypto.CkksProfile:
        return self.cipher.profile

    @property
    def shape(self) -> tuple[int, int]:
        return (self.layout.n_blocks, self.profile.block_size)

    def random_values(self, seed: int, scale: float = 0.01) -> npt.NDArray[np.float64]:
        return np.random.default_rng(seed).normal(0.0, scale, self.shape)

    def initial_model(self, values: npt.NDArray[np.float64], *, version: int = 0) -> bytes:
        blocks = tuple(
            crypto.CipherBlock(i, self.cipher.encrypt_model_block(v)) for i, v in enumerate(values)
        )
        model = crypto.EncryptedModel(self.layout.fingerprint, version, self.key_epoch, blocks)
        return crypto.model_to_bytes(model)

    def update(
        self,
        values: npt.NDArray[np.float64],
        *,
        base_version: int,
        indices: Sequence[int] | None = None,
        update_id: uuid.UUID | None = None,
        key_epoch: int | None = None,
        fingerprint: bytes | None = None,
    ) -> tuple[uuid.UUID, bytes]:
        """An update envelope carrying ``values[i]`` for each block ``i`` in ``indices``."""
        chosen = range(len(values)) if indices is None else indices
        blocks = tuple(
            crypto.CipherBlock(i, self.cipher.encrypt_update_block(values[i])) for i in chosen
        )
        uid = update_id or uuid.uuid4()
        update = crypto.EncryptedUpdate(
            fingerprint or self.layout.fingerprint,
            base_version,
            self.key_epoch if key_epoch is None else key_epoch,
            uid,
            blocks,
        )
        return uid, crypto.update_to_bytes(update)

    def decrypt_model(self, data: bytes) -> tuple[int, npt.NDArray[np.float64]]:
        """Version and ``(n_blocks, block_size)`` values of a full model envelope."""
        limits = crypto.EnvelopeLimits(self.layout.n_blocks, self.profile.max_block_bytes)
        model = crypto.model_from_bytes(data, limits)
        assert [b.index for b in model.blocks] == list(range(self.layout.n_blocks))
        return model.version, np.stack([self.cipher.decrypt_block(b.data) for b in model.blocks])

    def decrypt_blocks(self, data: bytes) -> tuple[int, dict[int, npt.NDArray[np.float64]]]:
        """Version and the blocks (by index) of a possibly partial model envelope."""
        limits = crypto.EnvelopeLimits(self.layout.n_blocks, self.profile.max_block_bytes)
        model = crypto.model_from_bytes(data, limits)
        return model.version, {b.index: self.cipher.decrypt_block(b.data) for b in model.blocks}
