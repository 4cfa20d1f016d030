"""In-process stand-ins for keyauth and fl_server behind ``httpx.MockTransport``.

They follow docs/protocol.md closely enough to drive the client through every path, and
the server adds ciphertexts with the real ``crypto.ServerCipher``: decrypting what it
holds is exactly what a real server would have. Fault injection is explicit per test.
``tests.fl_client.memory_port`` puts the rounds onto the fake server's handlers directly.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

import crypto
from harness.corpus import (  # _with_scale forges a ciphertext scale crypto/ would never write
    _with_scale,
    flip_bit,
)
from hefl_study import StudySpec, spec_from_mapping, spec_to_json


def study(
    name: str = "cancer",
    *,
    data: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    **sections: Any,
) -> StudySpec:
    """A study spec for the tests: breast cancer's 30 features from the bundled factory,
    logistic, binary, SGD at lr 0.1 in batches of 32, 100 updates."""
    raw: dict[str, Any] = {
        "name": name,
        "profile": "test-n2048",
        "model": model or {"name": "logistic", "seed": 0},
        "data": data or {"task": "binary", "classes": [0, 1], "input_shape": [30]},
        "training": {"lr": 0.1, "batch_size": 32},
        "stop": {"target_updates": 100},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return spec_from_mapping(raw)


def digits_study(name: str = "digits", **sections: Any) -> StudySpec:
    """``study`` for sklearn's digits (1x8x8 images, 10 classes) with an MLP."""
    return study(
        name,
        data={"task": "multiclass", "classes": list(range(10)), "input_shape": [1, 8, 8]},
        model={"name": "mlp", "seed": 0},
        **sections,
    )


def corrupt_update(server: FakeServer, client: crypto.ClientCipher, how: str) -> str:
    """An update that corrupts block 0 of the model, applied as the server applies any
    update (``flipped bit``: one bit of its ciphertext; ``another key``: encrypted under
    another key authority's key of the same profile); its id."""
    layout = server.layout
    assert layout is not None
    values = np.where(layout.zero_mask, 0.0, 1e-3)
    blocks = [client.encrypt_update_block(row) for row in values]
    if how == "flipped bit":
        blocks[0] = flip_bit(blocks[0], server.cipher)
    else:
        other = crypto.generate_key_material(client.profile)
        blocks[0] = crypto.ClientCipher(other.secret_context, client.profile).encrypt_update_block(
            values[0]
        )
    update = crypto.EncryptedUpdate(
        layout.fingerprint,
        server.version,
        server.key_epoch,
        uuid.uuid4(),
        tuple(crypto.CipherBlock(i, b) for i, b in enumerate(blocks)),
    )
    return str(server.push_update(crypto.update_to_bytes(update))["update_id"])


def forge_scale(server: FakeServer, keys: crypto.KeyMaterial, scale: float) -> None:
    """Serve block 0 of the model with another scale: 1e-300 decrypts to NaN and inf,
    NaN cannot be decrypted at all."""
    served = server.cipher.block_to_bytes(server.blocks[0])
    server.forged_blocks[0] = _with_scale(keys.secret_context, served, scale)


def problem(
    status: int,
    code: str,
    detail: str = "",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": code, "status": status}
    body.update(detail=detail or code, code=code, **extra)
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/problem+json", **(headers or {})},
    )


@dataclass
class FakeKeyauth:
    """Enrollment tokens, client credentials, short-lived bearer tokens, secret contexts."""

    keys: crypto.KeyMaterial
    key_epoch: int = 1
    token_ttl: int = 300
    # the keys of other epochs (a key rotation), by epoch; ``keys`` is every other's
    epochs: dict[int, crypto.KeyMaterial] = field(default_factory=dict)
    tokens_issued: int = 0
    enrollment_tokens: set[str] = field(default_factory=lambda: {"enroll-me"})
    clients: dict[str, str] = field(default_factory=dict)
    # redeemed token -> its client, until that client's first access token (re-delivery)
    unconfirmed: dict[str, str] = field(default_factory=dict)
    valid_tokens: set[str] = field(default_factory=set)
    requests: list[httpx.Request] = field(default_factory=list)

    def keys_of(self, key_epoch: int) -> crypto.KeyMaterial:
        return self.epochs.get(key_epoch, self.keys)

    def issue_enrollment_token(self) -> str:
        token = f"enroll-{uuid.uuid4().hex}"
        self.enrollment_tokens.add(token)
        return token

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/enroll":
            token = json.loads(request.content)["token"]
            status = 201
            if token in self.unconfirmed:
                status, client_id = 200, self.unconfirmed[token]
                secret = self.clients[client_id]
            elif token not in self.enrollment_tokens:
                return problem(403, "enrollment_token_used")
            else:
                self.enrollment_tokens.discard(token)
                client_id = f"c{len(self.clients) + 1}"
                secret = f"secret-{uuid.uuid4().hex}"
                self.clients[client_id] = secret
                self.unconfirmed[token] = client_id
            return httpx.Response(
                status,
                json={
                    "client_id": client_id,
                    "client_name": f"hospital-{client_id}",
                    "client_secret": secret,
                    "key_epoch": self.key_epoch,
                    "profile": self.keys.profile_name,
                },
            )
        if path == "/v1/token":
            body = json.loads(request.content)
            if self.clients.get(body["client_id"]) != body["client_secret"]:
                return problem(401, "client_credentials_invalid")
            self.unconfirmed = {t: c for t, c in self.unconfirmed.items() if c != body["client_id"]}
            self.tokens_issued += 1
            token = f"access-{body['client_id']}-{self.tokens_issued}-{uuid.uuid4().hex}"
            self.valid_tokens.add(token)
            return httpx.Response(
                200,
                json={
                    "access_token": token,
                    "token_type": "bearer",
                    "expires_in": self.token_ttl,
                    "key_epoch": self.key_epoch,
                },
            )
        if path == "/v1/keys/secret-context":
            auth = request.headers.get("Authorization", "")
            if auth.removeprefix("Bearer ") not in self.valid_tokens:
                return problem(401, "token_invalid")
            epoch = int(request.url.params.get("epoch", self.key_epoch))
            return httpx.Response(
                200,
                content=self.keys_of(epoch).secret_context,
                headers={
                    "X-Hefl-Key-Epoch": str(epoch),
                    "X-Hefl-Profile": self.keys.profile_name,
                    "Content-Type": "application/octet-stream",
                },
            )
        return problem(404, "not_found")


class Refusal(Exception):
    """A problem the fake server answers with, before it becomes HTTP or a typed error."""

    def __init__(self, status: int, code: str, retry_after: int | None = None, **extra: Any):
        super().__init__(code)
        self.status, self.code, self.retry_after, self.extra = status, code, retry_after, extra


@dataclass
class FakeServer:
    """A protocol-following aggregation server with one job, holding its model as
    ciphertexts.

    Its handlers (``job`` ... ``post_metrics``) know nothing of HTTP, like fl_server's
    service: calling the fake is the HTTP edge (``/v1/jobs/{job}/...``), ``MemoryPort``
    the rounds' port onto them. ``pause()`` / ``resume()`` / ``stop()`` act as the
    administrator would; ``locate()`` and ``repair()`` as the server's integrity machinery
    (docs/protocol.md, "Integrity"), which the tests drive step by step.
    """

    keys: crypto.KeyMaterial
    keyauth: FakeKeyauth
    spec: StudySpec = field(default_factory=study)
    spec_body: bytes | None = None  # what GET .../spec answers instead of the spec (tests)
    stop_reason: str | None = None
    paused_from: str | None = None
    key_epoch: int = 1
    target_updates: int = 100
    max_staleness: int = 10
    weight: float = 1.0
    state: str = "waiting_for_initial_model"
    version: int = 0
    layout: crypto.ModelLayout | None = None
    blocks: dict[int, crypto.EncryptedBlock] = field(default_factory=dict)
    changed_at: dict[int, int] = field(default_factory=dict)
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: list[bytes] = field(default_factory=list)
    # the X-Hefl-Samples of each update sent (None: the header was absent)
    samples_declared: list[int | None] = field(default_factory=list)
    layouts_put: list[bytes] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    metrics_updates: set[str] = field(default_factory=set)  # updates whose report is kept
    legacy: bool = False  # an fl_server without POST …/leases and X-Hefl-Metrics
    # POST …/updates?lease=next answered with the next lease and model (else: the plain 202)
    answers_lease_next: bool = False
    pulls: list[httpx.Request] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    # fault injection
    drop_answer_after_apply: int = 0
    fail_with_503: int = 0
    slots_busy: int = 0
    reject_token_once: bool = False
    too_stale_next: int = 0
    lagging_pulls: int = 0
    published: dict[int, bytes] = field(default_factory=dict)
    applied: int = 0
    # integrity: the update that made each version (id, envelope, weight), the reports,
    # the search's state and probe, a quarantine of every client's updates
    key_id: str | None = None
    made: dict[int, tuple[str, bytes, float]] = field(default_factory=dict)
    integrity_reports: list[dict[str, Any]] = field(default_factory=list)
    integrity_state: str = "healthy"
    probe: dict[str, Any] | None = None
    quarantined: bool = False
    forged_blocks: dict[int, bytes] = field(default_factory=dict)  # served instead (tests)
    # key rotation: the one under way (``Job.rotation``), and one to start at the next push
    rotation: dict[str, Any] | None = None
    rotate_at_next_push: tuple[int, str, str] | None = None

    def __post_init__(self) -> None:
        self.profile = crypto.get_profile(self.keys.profile_name)
        self.cipher = crypto.ServerCipher(self.keys.public_context, self.profile)
        if self.key_id is None:
            self.key_id = self.keys.key_id

    @property
    def name(self) -> str:
        return self.spec.name

    # -- the administrator -----------------------------------------------------------------

    def pause(self) -> None:
        if self.state != "paused":
            self.paused_from, self.state = self.state, "paused"

    def resume(self) -> None:
        assert self.paused_from is not None
        self.state, self.paused_from = self.paused_from, None

    def stop(self) -> None:
        self.state, self.stop_reason = "done", "stopped"

    def rotate(self, key_epoch: int, key_id: str, client_id: str) -> None:
        """Move the job to ``key_epoch``: ``client_id`` is asked to re-encrypt the model."""
        self.rotation = {
            "key_epoch": key_epoch,
            "key_id": key_id,
            "version": self.version,
            "client_id": client_id,
            "deadline": "2030-01-01T00:01:00Z",
            "started_at": "2030-01-01T00:00:00Z",
        }

    def put_rotated_model(self, envelope: bytes) -> dict[str, Any]:
        rotation = self.rotation
        if rotation is None:
            raise Refusal(409, "rotation_not_offered")
        model = crypto.model_from_bytes(envelope, self._limits())
        if model.key_epoch != rotation["key_epoch"]:
            raise Refusal(409, "key_epoch_mismatch", key_epoch=rotation["key_epoch"])
        if model.version != self.version:
            raise Refusal(409, "version_ahead", current_version=self.version)
        assert [b.index for b in model.blocks] == sorted(self.blocks)
        self.blocks = {b.index: self.cipher.load_model_block(b.data) for b in model.blocks}
        self.key_epoch, self.key_id = rotation["key_epoch"], rotation["key_id"]
        self.version += 1
        self.changed_at = dict.fromkeys(self.blocks, self.version)
        self.published[self.version] = self.model_bytes()
        self.rotation = None
        return self.job()

    # -- the handlers ----------------------------------------------------------------------

    def job(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.spec.description,
            "state": self.state,
            "stop_reason": self.stop_reason,
            "version": self.version,
            "updates_applied": self.applied,
            "target_updates": self.target_updates,
            "spec_sha256": self.spec.sha256,
            "key_epoch": self.key_epoch,
            "profile": self.profile.name,
            "layout_fingerprint": self.layout.fingerprint.hex() if self.layout else None,
            "created_at": "2026-11-30T00:00:00Z",
            "training_seconds": 0.0,
            "key_id": self.key_id,
            "integrity": {"state": self.integrity_state, "probe": self.probe},
            "rotation": self.rotation,
        }

    def spec_bytes(self) -> bytes:
        if self.spec_body is not None:
            return self.spec_body
        return spec_to_json(self.spec).encode("utf-8")

    def _refuse_if_paused(self) -> None:
        if self.state == "paused":
            raise Refusal(409, "job_paused")

    def put_layout(self, raw: bytes) -> bool:
        self.layouts_put.append(raw)
        layout = crypto.ModelLayout.from_json(raw)
        if self.layout is None:
            self.layout = layout
            return True
        if layout.fingerprint != self.layout.fingerprint:
            raise Refusal(409, "layout_mismatch")
        return False

    def get_layout(self) -> bytes:
        if self.layout is None:
            raise Refusal(404, "no_layout")
        return self.layout.to_json()

    def put_initial_model(self, envelope: bytes) -> None:
        if self.blocks:
            raise Refusal(409, "initial_model_exists")
        model = crypto.model_from_bytes(envelope, self._limits())
        assert model.version == 0
        assert self.layout is not None
        assert len(model.blocks) == self.layout.n_blocks
        self.blocks = {b.index: self.cipher.load_model_block(b.data) for b in model.blocks}
        self.published[0] = self.model_bytes()
        if self.state == "waiting_for_initial_model":
            self.state = "training"

    def get_model(
        self, since: int | None, etag: str | None
    ) -> tuple[bytes, int, str | None] | None:
        """Envelope, version and ETag; ``None`` if ``etag`` is current (304)."""
        if not self.blocks:
            raise Refusal(409, "job_not_started")
        if self.lagging_pulls and self.version > 0:
            # downloads may lag the applied model: serve the previous version, whole
            self.lagging_pulls -= 1
            return self.published[self.version - 1], self.version - 1, None
        current = f'"v{self.version}"'
        if etag == current:
            return None
        return self.model_bytes(since), self.version, current

    def request_slot(self) -> str:
        self._refuse_if_paused()
        if self.rotation is not None:
            raise Refusal(409, "job_rotating")
        if self.slots_busy:
            self.slots_busy -= 1
            raise Refusal(429, "slots_full", retry_after=7)
        return "2030-01-01T00:00:00Z"

    def lease_model(self, since: int | None) -> tuple[bytes, int, str | None]:
        """``request_slot`` and the model in one (``POST …/leases``): never "not modified"."""
        if self.legacy:
            raise Refusal(404, "not_found")
        if self.state == "done":
            raise Refusal(409, "job_not_training")
        self.request_slot()
        model = self.get_model(since, None)
        assert model is not None
        return model

    def push_update(self, envelope: bytes, metrics: str | None = None) -> dict[str, Any]:
        self.uploads.append(envelope)
        update = crypto.update_from_bytes(envelope, self._limits())
        update_id = str(update.update_id)
        if metrics is not None and self.legacy:
            metrics = None  # an older server does not know the header
        if update_id in self.acks:
            self._keep_metrics(update_id, metrics)
            return {**self.acks[update_id], "duplicate": True}
        self._refuse_if_paused()
        if self.state != "training":
            raise Refusal(409, "job_not_training")
        if self.quarantined:
            raise Refusal(403, "client_quarantined")
        if self.rotate_at_next_push is not None:
            self.rotate(*self.rotate_at_next_push)
            self.rotate_at_next_push = None
        if self.rotation is not None:
            raise Refusal(409, "job_rotating")
        if update.key_epoch != self.key_epoch:
            raise Refusal(409, "key_epoch_mismatch", key_epoch=self.key_epoch)
        tau = self.version - update.base_version
        if self.too_stale_next:
            self.too_stale_next -= 1
            raise Refusal(409, "too_stale", current_version=self.version)
        if tau > self.max_staleness:
            raise Refusal(409, "too_stale", current_version=self.version)
        for block in update.blocks:
            self.cipher.add_weighted(
                self.blocks[block.index], self.cipher.load_update_block(block.data), self.weight
            )
        self.version += 1
        self.applied += 1
        self.made[self.version] = (update_id, envelope, self.weight)
        for block in update.blocks:
            self.changed_at[block.index] = self.version
        self.published[self.version] = self.model_bytes()
        if self.version >= self.target_updates:
            self.state, self.stop_reason = "done", "target_updates"
        ack = {
            "update_id": update_id,
            "version": self.version,
            "staleness": tau,
            "weight": self.weight,
            "duplicate": False,
        }
        self.acks[update_id] = ack
        self._keep_metrics(update_id, metrics)
        return ack

    def _keep_metrics(self, update_id: str, metrics: str | None) -> None:
        # a report that comes with an update is kept once, whatever the resends
        if metrics is not None and update_id not in self.metrics_updates:
            self.metrics_updates.add(update_id)
            self.metrics.append(json.loads(metrics))

    def post_metrics(self, body: dict[str, Any]) -> None:
        self.metrics.append(body)

    # -- integrity -------------------------------------------------------------------------

    def post_integrity(self, body: dict[str, Any]) -> str:
        if body["version"] > self.version:
            raise Refusal(409, "version_ahead", current_version=self.version)
        self.integrity_reports.append(body)
        return self.integrity_state

    def locate(
        self, version: int, update_id: str | None = None, client_id: str | None = None
    ) -> None:
        """Probe ``version`` (or ``version`` plus update ``update_id`` of ``client_id``)."""
        self.integrity_state = "locating"
        self.probe = {"version": version, "update_id": update_id, "client_id": client_id}

    def get_probe_model(self, version: int, update_id: str | None) -> tuple[bytes, int]:
        """The probed version, rebuilt by exact subtraction of the updates after it (or
        a version plus one update): the envelope and its version."""
        probe = self.probe or {}
        if (probe.get("version"), probe.get("update_id")) != (version, update_id):
            raise Refusal(409, "probe_not_offered")
        blocks = self._rebuilt(version)
        if update_id is not None:
            [(envelope, weight)] = [(e, w) for u, e, w in self.made.values() if u == update_id]
            for block in crypto.update_from_bytes(envelope, self._limits()).blocks:
                update = self.cipher.load_update_block(block.data)
                self.cipher.add_weighted(blocks[block.index], update, weight)
        return self._envelope(blocks, version), version

    def _rebuilt(self, version: int) -> dict[int, crypto.EncryptedBlock]:
        blocks = {i: self._copy(b) for i, b in self.blocks.items()}
        for later in range(self.version, version, -1):
            _, envelope, weight = self.made[later]
            for block in crypto.update_from_bytes(envelope, self._limits()).blocks:
                update = self.cipher.load_update_block(block.data)
                self.cipher.subtract_weighted(blocks[block.index], update, weight)
        return blocks

    def _copy(self, block: crypto.EncryptedBlock) -> crypto.EncryptedBlock:
        return self.cipher.load_model_block(self.cipher.block_to_bytes(block))

    def repair(self, version: int, *, quarantine: bool = False) -> None:
        """Remove the update that made ``version`` exactly; a new version; healthy; with
        ``quarantine``, every update refused after (the fake knows no client apart)."""
        _, envelope, weight = self.made.pop(version)
        self.version += 1
        for block in crypto.update_from_bytes(envelope, self._limits()).blocks:
            update = self.cipher.load_update_block(block.data)
            self.cipher.subtract_weighted(self.blocks[block.index], update, weight)
            self.changed_at[block.index] = self.version
        self.published[self.version] = self.model_bytes()
        self.integrity_state, self.probe = "healthy", None
        self.quarantined = self.quarantined or quarantine

    def model_bytes(self, since: int | None = None) -> bytes:
        indices = sorted(
            i for i in self.blocks if since is None or self.changed_at.get(i, 0) > since
        )
        return self._envelope({i: self.blocks[i] for i in indices}, self.version)

    def _envelope(self, blocks: dict[int, crypto.EncryptedBlock], version: int) -> bytes:
        assert self.layout is not None
        return crypto.model_to_bytes(
            crypto.EncryptedModel(
                fingerprint=self.layout.fingerprint,
                version=version,
                key_epoch=self.key_epoch,
                blocks=tuple(
                    crypto.CipherBlock(
                        i, self.forged_blocks.get(i) or self.cipher.block_to_bytes(blocks[i])
                    )
                    for i in sorted(blocks)
                ),
            )
        )

    def _limits(self) -> crypto.EnvelopeLimits:
        assert self.layout is not None
        return crypto.EnvelopeLimits(
            self.layout.n_blocks, self.profile.max_block_bytes, self.layout.fingerprint
        )

    # -- the HTTP edge ---------------------------------------------------------------------

    def _authorized(self, request: httpx.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return token in self.keyauth.valid_tokens

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        status_path = path in ("/v1/status", f"/v1/jobs/{self.name}/status")
        if status_path and method == "GET" and self._authorized(request):
            # as fl_server by default: the status is for token holders
            body = {"jobs": [self.job()]} if path == "/v1/status" else self.job()
            return httpx.Response(200, json=body)
        # the job's own GET always answers: the failures meet the paths below it
        if self.fail_with_503 and path.startswith(f"/v1/jobs/{self.name}/"):
            self.fail_with_503 -= 1
            return problem(503, "server_busy", headers={"Retry-After": "0"})
        if not self._authorized(request):
            return problem(401, "token_invalid")
        if method != "GET" and self.reject_token_once:
            self.reject_token_once = False
            return problem(401, "token_expired")
        try:
            return self._route(request, method, path)
        except Refusal as refusal:
            headers = {}
            if refusal.retry_after is not None:
                headers["Retry-After"] = str(refusal.retry_after)
            return problem(refusal.status, refusal.code, headers=headers, **refusal.extra)

    def _route(self, request: httpx.Request, method: str, path: str) -> httpx.Response:
        if (method, path) == ("GET", "/v1/jobs"):
            return httpx.Response(200, json=[self.job()])
        prefix = f"/v1/jobs/{self.name}"
        if not (path == prefix or path.startswith(prefix + "/")):
            if path.startswith("/v1/jobs/"):
                return problem(404, "job_not_found")
            return problem(404, "not_found")
        route = (method, path.removeprefix(prefix))
        if route == ("GET", ""):
            return httpx.Response(200, json=self.job())
        if route == ("GET", "/spec"):
            return httpx.Response(
                200, content=self.spec_bytes(), headers={"X-Hefl-Spec-Sha256": self.spec.sha256}
            )
        if route == ("PUT", "/layout"):
            created = self.put_layout(request.content)
            assert self.layout is not None
            body = {"fingerprint": self.layout.fingerprint.hex()}
            return httpx.Response(201 if created else 200, json=body)
        if route == ("GET", "/layout"):
            return httpx.Response(200, content=self.get_layout())
        if route == ("PUT", "/initial-model"):
            self.put_initial_model(request.content)
            return httpx.Response(201, json={"version": 0, "state": "training"})
        if route == ("GET", "/model") and "version" in request.url.params:
            params = request.url.params
            content, version = self.get_probe_model(int(params["version"]), params.get("update"))
            return httpx.Response(
                200, content=content, headers={"X-Hefl-Model-Version": str(version)}
            )
        if route == ("GET", "/model"):
            self.pulls.append(request)
            since = request.url.params.get("since")
            model = self.get_model(
                int(since) if since is not None else None, request.headers.get("If-None-Match")
            )
            if model is None:
                return httpx.Response(304, headers={"ETag": f'"v{self.version}"'})
            content, version, etag = model
            headers = {"X-Hefl-Model-Version": str(version)}
            if etag is not None:
                headers |= {"ETag": etag, "Content-Type": "application/octet-stream"}
            return httpx.Response(200, content=content, headers=headers)
        if route == ("POST", "/leases"):
            self.pulls.append(request)
            return self._leased(request, {})
        if route[1] == "/slots":
            if method == "DELETE":
                return httpx.Response(204)
            return httpx.Response(200, json={"expires_at": self.request_slot()})
        if route == ("POST", "/updates"):
            declared = request.headers.get("X-Hefl-Samples")
            self.samples_declared.append(None if declared is None else int(declared))
            ack = self.push_update(request.content, request.headers.get("X-Hefl-Metrics"))
            if self.drop_answer_after_apply and not ack["duplicate"]:
                self.drop_answer_after_apply -= 1
                raise httpx.ReadError("connection reset after the update was applied")
            if (
                self.answers_lease_next
                and request.url.params.get("lease") == "next"
                and self.state == "training"
            ):
                self.pulls.append(request)
                return self._leased(request, {"X-Hefl-Update-Receipt": json.dumps(ack)})
            return httpx.Response(202, json=ack)
        if route == ("POST", "/metrics"):
            self.post_metrics(json.loads(request.content))
            return httpx.Response(202, json={"version": self.version})
        if route == ("PUT", "/rotation"):
            return httpx.Response(200, json=self.put_rotated_model(request.content))
        if route == ("POST", "/integrity"):
            state = self.post_integrity(json.loads(request.content))
            return httpx.Response(202, json={"state": state})
        return problem(404, "not_found")

    def _leased(self, request: httpx.Request, extra: dict[str, str]) -> httpx.Response:
        since = request.url.params.get("since")
        content, version, etag = self.lease_model(int(since) if since is not None else None)
        headers = {
            "X-Hefl-Model-Version": str(version),
            "X-Hefl-Job-State": self.state,
            "X-Hefl-Job-Version": str(self.version),
            "X-Hefl-Lease-Expires": "2030-01-01T00:00:00Z",
            "Content-Type": "application/octet-stream",
            **extra,
        }
        if etag is not None:
            headers["ETag"] = etag
        return httpx.Response(200, content=content, headers=headers)

    def writes(self) -> list[str]:
        """Every request that is not a read: a layout, a model, a slot, an update, metrics."""
        return [f"{r.method} {r.url.path}" for r in self.requests if r.method != "GET"]

    def decrypt(self, client: crypto.ClientCipher) -> Any:
        """The model as the server holds it, decrypted with a client's key (tests only)."""
        import numpy as np

        assert self.layout is not None
        return np.stack(
            [
                client.decrypt_block(self.cipher.block_to_bytes(self.blocks[i]))
                for i in range(self.layout.n_blocks)
            ]
        )
