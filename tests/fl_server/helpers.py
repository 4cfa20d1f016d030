"""Helpers for the fl_server tests: specs, jobs, a test hospital that encrypts, token minting."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
import hefl_study
from fl_server.domain import BodyReader, UpdateAck
from fl_server.errors import BodyTooLargeError
from fl_server.job_service import JobService
from fl_server.material import EpochContext, KeyauthMaterial
from fl_server.settings import ServerSettings
from fl_server.store import FileStore, JobRecord, Store, read_job_file
from harness.corpus import flip_bit
from harness.studies import SERVER_KEYS, STOP_KEYS, study_mapping
from hefl_wire import AccessClaims, TokenVerifier

PROFILE = "test-n2048"
EPOCH = 1
JOB = "study"

# 5 x 1000 + 5 = 5005 parameters: three blocks of 2048 values.
LAYOUT_TENSORS: dict[str, Any] = {
    "fc.weight": np.zeros((5, 1000), np.float32),
    "fc.bias": np.zeros(5, np.float32),
}


def wait_published(service: JobService, timeout: float = 10.0) -> None:
    """Wait until downloads serve every applied update (the worker publishes after a pause)."""
    deadline = time.monotonic() + timeout
    while True:
        status = service.status()
        if status.queued_updates == 0 and status.published_version == status.job.version:
            return
        assert time.monotonic() < deadline, "the model was not published"
        time.sleep(0.01)


def body_reader(body: bytes, limits: list[int] | None = None) -> BodyReader:
    """A request body as the routes hand it to a job: ``body``, refused past the limit the
    job asks for (as ``deps.read_body`` does); each limit asked is added to ``limits``."""

    async def read(limit: int) -> bytes:
        if limits is not None:
            limits.append(limit)
        if len(body) > limit:
            raise BodyTooLargeError(f"body of {len(body)} bytes exceeds the {limit} allowed")
        return body

    return read


async def start_job(
    job: JobService,
    client: AccessClaims,
    hospital: Hospital,
    initial: npt.NDArray[np.float64] | None = None,
) -> None:
    """What the first hospital does: put the layout, then the initial model (zeros unless
    ``initial`` is given)."""
    values = np.zeros(hospital.shape) if initial is None else initial
    assert (await job.receive_layout(client, body_reader(hospital.layout.to_json()))).created
    await job.receive_initial_model(client, body_reader(hospital.initial_model(values)))


async def push_update(job: JobService, client: AccessClaims, envelope: bytes) -> UpdateAck:
    """``POST .../updates``: the update's answer once it is durable."""
    return await job.receive_update(client, body_reader(envelope))


async def report_metrics(
    job: JobService, client: AccessClaims, version: int, metrics: Mapping[str, float]
) -> int:
    """``POST .../metrics``: a client's evaluation of model ``version``."""
    body = json.dumps({"version": version, "metrics": dict(metrics)}).encode()
    return await job.receive_metrics(client, body_reader(body))


def make_settings(state_dir: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "client_updates_per_minute": 0,
        "revocation_refresh": 0,
        # Unit tests keep the model in this process; tests/fl_server/test_server_shards.py
        # and the end-to-end tests run worker processes.
        "shards": 0,
    }
    values.update(overrides)
    return ServerSettings(**values)


def spec_mapping(name: str = JOB, *, profile: str = PROFILE, **job: Any) -> dict[str, Any]:
    """A study spec as a mapping: ``job`` holds its ``[server]`` and ``[stop]`` keys."""
    return study_mapping(name, profile=profile, **job)


def make_spec(name: str = JOB, *, profile: str = PROFILE, **job: Any) -> hefl_study.StudySpec:
    """A valid study spec; ``job`` sets its ``[server]`` and ``[stop]`` keys."""
    return hefl_study.spec_from_mapping(spec_mapping(name, profile=profile, **job))


def spec_body(name: str = JOB, *, profile: str = PROFILE, **job: Any) -> bytes:
    """What ``POST /v1/jobs`` takes: the spec's canonical JSON."""
    return hefl_study.spec_to_json(make_spec(name, profile=profile, **job)).encode()


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Process settings and the spec's keys, from one set of test overrides."""
    job = {k: v for k, v in overrides.items() if k in SERVER_KEYS | STOP_KEYS}
    settings = {k: v for k, v in overrides.items() if k not in job}
    return settings, job


def job_record(spec: hefl_study.StudySpec, material: KeyauthMaterial) -> JobRecord:
    """What the registry records when it creates ``spec``'s job on ``material``'s epoch."""
    return JobRecord(
        job_id=uuid.uuid4().hex,
        name=spec.name,
        spec_json=hefl_study.spec_to_json(spec),
        spec_sha256=spec.sha256,
        key_epoch=material.key_epoch,
        profile=material.profile,
        created_at=time.time(),
    )


def open_job(
    material: KeyauthMaterial,
    state_dir: Path,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    **overrides: Any,
) -> JobService:
    """Job ``JOB``'s service on ``material``'s epoch; ``overrides`` are settings or spec keys.

    Its directory is ``state_dir / "jobs" / JOB`` unless ``store`` is given. A directory
    that holds the job already reopens it; spec keys given then stand for a changed spec
    (something only a test does: a job's spec is fixed when it is created).
    """
    settings, job = split_overrides(overrides)
    directory = state_dir / "jobs" / JOB
    record = read_job_file(directory) if store is None else None
    if record is None:
        record = job_record(make_spec(**job), material)
    elif job:
        spec = make_spec(**job)
        record = replace(record, spec_json=hefl_study.spec_to_json(spec), spec_sha256=spec.sha256)
    store = store or FileStore(directory)
    if store.load_job() is None:
        store.save_job(record)
    context = EpochContext(material.key_epoch, material.profile, material.public_context)
    return JobService(
        make_settings(state_dir, **settings), record, context, store=store, clock=clock
    )


def client_claims(
    material: KeyauthMaterial, key: Ed25519PrivateKey, client_id: str = "client-a"
) -> AccessClaims:
    """The verified claims of a client token, as a route hands them to a job."""
    verifier = TokenVerifier(material.verification_key_pem)
    return verifier.verify(mint_token(key, client_id))


def crash_image(state_dir: Path, into: Path) -> Path:
    """What a kill -9 leaves: the files as they are on disk right now (locks released).

    A file the server's journal thread removes while the copy runs (a checkpoint's
    temporary file, renamed into place) is one a kill -9 at that moment would not leave
    either: it is skipped.
    """

    def copy(src: str, dst: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.copy2(src, dst)

    shutil.copytree(state_dir, into, copy_function=copy)
    for lock in into.rglob("lock"):
        lock.unlink()
    return into


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

    def model_values(self, seed: int, scale: float = 0.01) -> npt.NDArray[np.float64]:
        """Random values in the layout's parameters, 0 in its padding (as a client sends)."""
        values = self.random_values(seed, scale)
        values.reshape(-1)[self.layout.total_params :] = 0.0
        return values

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

    def corrupted_update(
        self,
        values: npt.NDArray[np.float64],
        *,
        base_version: int,
        corruption: str,
        server: crypto.ServerCipher,
        other: crypto.ClientCipher | None = None,
        block: int = 0,
    ) -> tuple[uuid.UUID, bytes]:
        """An update the server accepts but that corrupts the model, in block ``block``.

        ``corruption`` is ``"flip"`` (one bit of the ciphertext flipped, where ``server``
        still loads it) or ``"other_key"`` (the block encrypted under ``other``, a key of
        the same profile from another key authority).
        """
        blocks = []
        for i in range(len(values)):
            data = self.cipher.encrypt_update_block(values[i])
            if i == block and corruption == "flip":
                data = flip_bit(data, server)
            elif i == block and corruption == "other_key":
                assert other is not None
                data = other.encrypt_update_block(values[i])
            elif i == block:
                raise ValueError(f"unknown corruption {corruption!r}")
            blocks.append(crypto.CipherBlock(i, data))
        uid = uuid.uuid4()
        update = crypto.EncryptedUpdate(
            self.layout.fingerprint, base_version, self.key_epoch, uid, tuple(blocks)
        )
        return uid, crypto.update_to_bytes(update)

    def check(self, values: npt.NDArray[np.float64]) -> tuple[bool, str | None]:
        """A client's check of a decrypted model: finite, in range, the padding near 0."""
        if not np.all(np.isfinite(values)):
            return False, "finite"
        if np.max(np.abs(values)) > self.profile.max_magnitude:
            return False, "range"
        padding = values.reshape(-1)[self.layout.total_params :]
        if padding.size and np.max(np.abs(padding)) > 1e-2:
            return False, "canary"
        return True, None

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


def admin_token(key: Ed25519PrivateKey, *, lifetime: float = 300) -> str:
    """An administrator's access token, as keyauth's ``POST /v1/admin/token`` signs it."""
    return mint_token(key, "admin", name="admin", role="admin", lifetime=lifetime)
