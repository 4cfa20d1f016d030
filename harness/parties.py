"""Enrolled hospitals that hold the secret key the server never sees, and their envelopes."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx
import numpy as np
import numpy.typing as npt

import crypto
from harness.enrollment import enrollment_token

__all__ = [
    "TEST_PROFILE",
    "Party",
    "Values",
    "decrypt_model",
    "enroll",
    "job_url",
    "make_layout",
    "model_envelope",
    "random_blocks",
    "restamp",
    "start_job",
    "update_envelope",
    "wait_published",
]

Values = npt.NDArray[np.float64]
TEST_PROFILE = "test-n2048"

_HEADERS = crypto.ENVELOPE_HEADERS
_BASE_AT = _HEADERS.prefix.size + _HEADERS.update.offset("base_version")
_UID_AT = _HEADERS.prefix.size + _HEADERS.update.offset("update_id")


@dataclass
class Party:
    """An enrolled hospital: credentials, an access token and its cipher."""

    client_id: str
    client_secret: str
    token: str
    secret_context: bytes
    cipher: crypto.ClientCipher
    key_epoch: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def profile(self) -> crypto.CkksProfile:
        return self.cipher.profile


def enroll(keyauth_url: str, admin_key: str, name: str) -> Party:
    """The protocol's enrollment: token from the admin, enroll, access token, secret context."""
    with httpx.Client(base_url=keyauth_url, timeout=30) as http:
        token = enrollment_token(keyauth_url, admin_key, name)
        creds = http.post("/v1/enroll", json={"token": token}).json()
        access = http.post(
            "/v1/token",
            json={"client_id": creds["client_id"], "client_secret": creds["client_secret"]},
        ).json()["access_token"]
        secret = http.get("/v1/keys/secret-context", headers={"Authorization": f"Bearer {access}"})
        secret.raise_for_status()
    profile = crypto.get_profile(secret.headers["X-Hefl-Profile"])
    return Party(
        creds["client_id"],
        creds["client_secret"],
        access,
        secret.content,
        crypto.ClientCipher(secret.content, profile),
        int(secret.headers["X-Hefl-Key-Epoch"]),
    )


def make_layout(n_params: int, profile: crypto.CkksProfile) -> crypto.ModelLayout:
    """A one-tensor layout of ``n_params`` parameters in ``profile``'s blocks."""
    return crypto.build_layout({"w": np.zeros(n_params, np.float32)}, profile.block_size)


def random_blocks(layout: crypto.ModelLayout, profile: crypto.CkksProfile, seed: int) -> Values:
    """Small random values, one row per block of ``layout`` (seeded); 0 in the canary and
    padding slots, as an honest model or update holds there."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 0.01, (layout.n_blocks, profile.block_size))
    values[layout.zero_mask] = 0.0
    return values


def model_envelope(party: Party, layout: crypto.ModelLayout, values: Values) -> bytes:
    """``values`` encrypted by ``party`` as an initial model (version 0)."""
    blocks = tuple(
        crypto.CipherBlock(i, party.cipher.encrypt_model_block(v)) for i, v in enumerate(values)
    )
    return crypto.model_to_bytes(
        crypto.EncryptedModel(layout.fingerprint, 0, party.key_epoch, blocks)
    )


def update_envelope(
    party: Party, layout: crypto.ModelLayout, values: Values, base_version: int
) -> tuple[str, bytes]:
    """``values`` encrypted by ``party`` as an update on ``base_version``: (update id, body)."""
    uid = uuid.uuid4()
    blocks = tuple(
        crypto.CipherBlock(i, party.cipher.encrypt_update_block(v)) for i, v in enumerate(values)
    )
    update = crypto.EncryptedUpdate(layout.fingerprint, base_version, party.key_epoch, uid, blocks)
    return str(uid), crypto.update_to_bytes(update)


def restamp(envelope: bytes, base_version: int) -> tuple[str, bytes]:
    """A pre-encrypted update with a fresh update id and base version (cheap load)."""
    uid = uuid.uuid4()
    data = bytearray(envelope)
    _HEADERS.update.field_codec("base_version").pack_into(data, _BASE_AT, base_version)
    _HEADERS.update.field_codec("update_id").pack_into(data, _UID_AT, uid.bytes)
    return str(uid), bytes(data)


def job_url(url: str, job: str, suffix: str = "") -> str:
    """The URL of job ``job`` at the server ``url``, then ``suffix`` (``/model``, ...)."""
    return f"{url}/v1/jobs/{job}{suffix}"


def start_job(
    url: str, job: str, party: Party, layout: crypto.ModelLayout, initial: Values
) -> None:
    """Put the layout and the initial model of job ``job``: it is in training."""
    with httpx.Client(timeout=60) as http:
        answer = http.put(
            job_url(url, job, "/layout"), content=layout.to_json(), headers=party.auth
        )
        assert answer.status_code == 201, answer.text
        answer = http.put(
            job_url(url, job, "/initial-model"),
            content=model_envelope(party, layout, initial),
            headers=party.auth,
        )
        assert answer.status_code == 201, answer.text


def decrypt_model(party: Party, layout: crypto.ModelLayout, data: bytes) -> tuple[int, Values]:
    """The version and the decrypted blocks of a served model."""
    limits = crypto.EnvelopeLimits(layout.n_blocks, party.profile.max_block_bytes)
    model = crypto.model_from_bytes(data, limits)
    assert [b.index for b in model.blocks] == list(range(layout.n_blocks))
    return model.version, np.stack([party.cipher.decrypt_block(b.data) for b in model.blocks])


def wait_published(
    url: str, job: str, party: Party, version: int, timeout: float = 60
) -> httpx.Response:
    """Job ``job``'s served model once it holds ``version`` (downloads may lag the model)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(job_url(url, job, "/model"), headers=party.auth, timeout=30)
        if int(answer.headers.get("X-Hefl-Model-Version", -1)) >= version:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"the server never served version {version}")
        time.sleep(0.05)
