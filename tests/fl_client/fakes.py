"""In-process stand-ins for keyauth and fl_server behind ``httpx.MockTransport``.

They follow docs/protocol.md closely enough to drive the client through every path, and
the server adds ciphertexts with the real ``crypto.ServerCipher``: decrypting what it
holds is exactly what a real server would have. Fault injection is explicit per test.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

import crypto


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
    tokens_issued: int = 0
    enrollment_tokens: set[str] = field(default_factory=lambda: {"enroll-me"})
    clients: dict[str, str] = field(default_factory=dict)
    # redeemed token -> its client, until that client's first access token (re-delivery)
    unconfirmed: dict[str, str] = field(default_factory=dict)
    valid_tokens: set[str] = field(default_factory=set)
    requests: list[httpx.Request] = field(default_factory=list)

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
            return httpx.Response(
                200,
                content=self.keys.secret_context,
                headers={
                    "X-Hefl-Key-Epoch": str(self.key_epoch),
                    "X-Hefl-Profile": self.keys.profile_name,
                    "Content-Type": "application/octet-stream",
                },
            )
        return problem(404, "not_found")


@dataclass
class FakeServer:
    """A protocol-following aggregation server holding the model as ciphertexts."""

    keys: crypto.KeyMaterial
    keyauth: FakeKeyauth
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
    layouts_put: list[bytes] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
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

    def __post_init__(self) -> None:
        self.profile = crypto.get_profile(self.keys.profile_name)
        self.cipher = crypto.ServerCipher(self.keys.public_context, self.profile)

    def _authorized(self, request: httpx.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return token in self.keyauth.valid_tokens

    def job(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "version": self.version,
            "target_updates": self.target_updates,
            "layout_fingerprint": self.layout.fingerprint.hex() if self.layout else None,
            "key_epoch": self.key_epoch,
            "profile": self.profile.name,
        }

    def model_bytes(self, since: int | None = None) -> bytes:
        assert self.layout is not None
        indices = sorted(
            i for i in self.blocks if since is None or self.changed_at.get(i, 0) > since
        )
        return crypto.model_to_bytes(
            crypto.EncryptedModel(
                fingerprint=self.layout.fingerprint,
                version=self.version,
                key_epoch=self.key_epoch,
                blocks=tuple(
                    crypto.CipherBlock(i, self.cipher.block_to_bytes(self.blocks[i]))
                    for i in indices
                ),
            )
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if self.fail_with_503 and path != "/v1/job":
            self.fail_with_503 -= 1
            return problem(503, "server_busy", headers={"Retry-After": "0"})
        needs_auth = method != "GET"
        if needs_auth and not self._authorized(request):
            return problem(401, "token_invalid")
        if needs_auth and self.reject_token_once:
            self.reject_token_once = False
            return problem(401, "token_expired")
        if (method, path) == ("GET", "/v1/job"):
            return httpx.Response(200, json=self.job())
        if (method, path) == ("PUT", "/v1/job/layout"):
            self.layouts_put.append(request.content)
            layout = crypto.ModelLayout.from_json(request.content)
            if self.layout is None:
                self.layout = layout
                return httpx.Response(201, json={"fingerprint": layout.fingerprint.hex()})
            if layout.fingerprint != self.layout.fingerprint:
                return problem(409, "layout_mismatch")
            return httpx.Response(200, json={"fingerprint": layout.fingerprint.hex()})
        if (method, path) == ("GET", "/v1/job/layout"):
            if self.layout is None:
                return problem(404, "no_layout")
            return httpx.Response(200, content=self.layout.to_json())
        if (method, path) == ("PUT", "/v1/job/initial-model"):
            if self.blocks:
                return problem(409, "initial_model_exists")
            assert self.layout is not None
            limits = crypto.EnvelopeLimits(
                self.layout.n_blocks, self.profile.max_block_bytes, self.layout.fingerprint
            )
            model = crypto.model_from_bytes(request.content, limits)
            assert model.version == 0
            assert len(model.blocks) == self.layout.n_blocks
            self.blocks = {b.index: self.cipher.load_model_block(b.data) for b in model.blocks}
            self.published[0] = self.model_bytes()
            self.state = "training"
            return httpx.Response(201, json={"version": 0, "state": "training"})
        if (method, path) == ("GET", "/v1/model"):
            self.pulls.append(request)
            if not self.blocks:
                return problem(409, "job_not_started")
            since = request.url.params.get("since")
            if self.lagging_pulls and self.version > 0:
                # downloads may lag the applied model: serve the previous version, whole
                self.lagging_pulls -= 1
                return httpx.Response(
                    200,
                    content=self.published[self.version - 1],
                    headers={"X-Hefl-Model-Version": str(self.version - 1)},
                )
            etag = f'"v{self.version}"'
            if request.headers.get("If-None-Match") == etag:
                return httpx.Response(304, headers={"ETag": etag})
            return httpx.Response(
                200,
                content=self.model_bytes(int(since) if since is not None else None),
                headers={
                    "X-Hefl-Model-Version": str(self.version),
                    "ETag": etag,
                    "Content-Type": "application/octet-stream",
                },
            )
        if path == "/v1/slots":
            if method == "DELETE":
                return httpx.Response(204)
            if self.slots_busy:
                self.slots_busy -= 1
                return problem(429, "slots_full", headers={"Retry-After": "7"})
            return httpx.Response(200, json={"expires_at": "2030-01-01T00:00:00Z"})
        if (method, path) == ("POST", "/v1/updates"):
            return self._update(request)
        if (method, path) == ("POST", "/v1/metrics"):
            self.metrics.append(json.loads(request.content))
            return httpx.Response(202, json={"version": self.version})
        if (method, path) == ("GET", "/v1/status"):
            return httpx.Response(200, json={"state": self.state, "version": self.version})
        return problem(404, "not_found")

    def _update(self, request: httpx.Request) -> httpx.Response:
        assert self.layout is not None
        self.uploads.append(request.content)
        limits = crypto.EnvelopeLimits(
            self.layout.n_blocks, self.profile.max_block_bytes, self.layout.fingerprint
        )
        update = crypto.update_from_bytes(request.content, limits)
        update_id = str(update.update_id)
        if update_id in self.acks:
            return httpx.Response(202, json={**self.acks[update_id], "duplicate": True})
        if self.state != "training":
            return problem(409, "job_not_training")
        tau = self.version - update.base_version
        if self.too_stale_next:
            self.too_stale_next -= 1
            return problem(409, "too_stale", current_version=self.version)
        if tau > self.max_staleness:
            return problem(409, "too_stale", current_version=self.version)
        for block in update.blocks:
            self.cipher.add_weighted(
                self.blocks[block.index], self.cipher.load_update_block(block.data), self.weight
            )
        self.version += 1
        self.applied += 1
        for block in update.blocks:
            self.changed_at[block.index] = self.version
        self.published[self.version] = self.model_bytes()
        if self.version >= self.target_updates:
            self.state = "done"
        ack = {
            "update_id": update_id,
            "version": self.version,
            "staleness": tau,
            "weight": self.weight,
            "duplicate": False,
        }
        self.acks[update_id] = ack
        if self.drop_answer_after_apply:
            self.drop_answer_after_apply -= 1
            raise httpx.ReadError("connection reset after the update was applied")
        return httpx.Response(202, json=ack)

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
