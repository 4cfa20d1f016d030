"""A fake keyauth and a fake fl_server for ``hefl-admin``'s tests, as ``httpx.MockTransport``
handlers that keep state and follow docs/protocol.md (admin token, ``/v1/jobs``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import httpx

from hefl_study import SpecError, spec_from_json

ADMIN_KEY = "the-admin-key-0123456789"
ENV = {"KEYAUTH_ADMIN_KEY": ADMIN_KEY}


def problem(status: int, code: str, detail: str) -> httpx.Response:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": detail, "code": code}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


class FakeKeyauth:
    """keyauth's admin token: ``POST /v1/admin/token`` against the admin key; its current
    key epoch (``GET /healthz``) and a new one (``POST /v1/key-epochs``)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.issued: list[str] = []
        self.key_epoch = 1

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if (request.method, request.url.path) == ("GET", "/healthz"):
            return httpx.Response(200, json={"status": "ok", "key_epoch": self.key_epoch})
        if (request.method, request.url.path) == ("POST", "/v1/key-epochs"):
            if request.headers.get("X-Admin-Key") != ADMIN_KEY:
                return problem(401, "admin_key_invalid", "the admin key is not valid")
            self.key_epoch += 1
            return httpx.Response(201, json={"key_epoch": self.key_epoch, "profile": "n4096-s40"})
        if (request.method, request.url.path) != ("POST", "/v1/admin/token"):
            return problem(404, "not_found", "no such path")
        key = request.headers.get("X-Admin-Key")
        if not key:
            return problem(401, "admin_key_missing", "the X-Admin-Key header is required")
        if key != ADMIN_KEY:
            return problem(401, "admin_key_invalid", "the admin key is not valid")
        token = f"admin-token-{len(self.issued) + 1}"
        self.issued.append(token)
        body = {"access_token": token, "token_type": "bearer", "expires_in": 300}
        return httpx.Response(200, json=body, headers={"Cache-Control": "no-store"})


KEY_ID = "5e" * 32


def job_record(name: str, sha256: str, **changes: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "name": name,
        "description": "",
        "state": "waiting_for_initial_model",
        "stop_reason": None,
        "version": 0,
        "updates_applied": 0,
        "target_updates": 10,
        "spec_sha256": sha256,
        "key_epoch": 1,
        "key_id": KEY_ID,
        "profile": "n4096-s40",
        "layout_fingerprint": None,
        "created_at": "2030-01-01T00:00:00Z",
        "training_seconds": 0.0,
    }
    job.update(changes)
    return job


class FakeServer:
    """fl_server's job routes: admin tokens only (those ``keyauth`` issued), job states."""

    def __init__(self, keyauth: FakeKeyauth) -> None:
        self.keyauth = keyauth
        self.requests: list[httpx.Request] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self._resumes_to: dict[str, str] = {}
        self.failed: list[dict[str, str]] = []
        # Per job: the updates a repair may remove (id -> removed update), the quarantined.
        self.updates: dict[str, dict[str, dict[str, Any]]] = {}
        self.quarantined: dict[str, set[str]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        auth = request.headers.get("Authorization", "")
        if not auth:
            return problem(401, "token_missing", "no access token was presented")
        if auth.removeprefix("Bearer ") not in self.keyauth.issued:
            return problem(403, "token_wrong_role", "access token has role 'client'")
        if request.url.path == "/v1/status":
            jobs = [self.jobs[n] for n in sorted(self.jobs)]
            return httpx.Response(200, json={"jobs": jobs, "failed_jobs": self.failed})
        parts = [unquote(p) for p in request.url.raw_path.decode().split("/")[3:]]
        if parts == [] and request.method == "POST":
            return self._create(request.content)
        if parts == []:
            return httpx.Response(200, json=[self.jobs[n] for n in sorted(self.jobs)])
        job = self.jobs.get(parts[0])
        if job is None:
            return problem(404, "job_not_found", f"no job named {parts[0]!r}")
        action = parts[1] if len(parts) > 1 else ""
        if action == "" and request.method == "GET":
            return httpx.Response(200, json=job)
        if action == "status":
            return httpx.Response(200, json={**job, **self.statuses.get(job["name"], {})})
        if action == "repairs" and request.method == "POST":
            return self._repair(job, json.loads(request.content))
        if action == "quarantine" and request.method == "DELETE" and len(parts) == 3:
            return self._release(job, parts[2])
        if action == "rotation" and request.method == "POST":
            return self._rotate(job)
        return self._change(job, action)

    def _repair(self, job: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
        updates = self.updates.setdefault(job["name"], {})
        missing = [u for u in body["update_ids"] if u not in updates]
        if missing:
            return problem(404, "update_not_found", f"no applied update {missing[0]}")
        removed = [updates.pop(u) for u in body["update_ids"]]
        quarantined = sorted({r["client_id"] for r in removed}) if body["quarantine"] else []
        self.quarantined.setdefault(job["name"], set()).update(quarantined)
        job["version"] += 1
        repair = {
            "entry": 1,
            "version": job["version"],
            "at": "2030-01-01T00:10:00Z",
            "reason": "removed by the administrator",
            "first_bad_version": None,
            "versions_lost": job["version"] - min(r["version"] for r in removed),
            "removed": removed,
            "quarantined": quarantined,
        }
        return httpx.Response(200, json=repair)

    def _rotate(self, job: dict[str, Any]) -> httpx.Response:
        if self.keyauth.key_epoch <= job["key_epoch"]:
            return problem(
                409,
                "rotation_refused",
                f"keyauth's current key epoch {self.keyauth.key_epoch} is not newer than the "
                f"job's epoch {job['key_epoch']}: make new keys first (hefl-admin epochs "
                "rotate), then rotate the job",
            )
        job["rotation"] = {
            "key_epoch": self.keyauth.key_epoch,
            "key_id": "6f" * 32,
            "version": job["version"],
            "client_id": "client-a",
            "deadline": "2030-01-01T00:01:00Z",
            "started_at": "2030-01-01T00:00:00Z",
        }
        return httpx.Response(202, json=job)

    def _release(self, job: dict[str, Any], client_id: str) -> httpx.Response:
        quarantined = self.quarantined.setdefault(job["name"], set())
        if client_id not in quarantined:
            return problem(404, "client_not_quarantined", f"client {client_id} is not quarantined")
        quarantined.discard(client_id)
        return httpx.Response(204)

    def _create(self, body: bytes) -> httpx.Response:
        try:
            spec = spec_from_json(body.decode("utf-8"))
        except SpecError as exc:
            return problem(422, "spec_invalid", "\n".join(str(p) for p in exc.problems))
        existing = self.jobs.get(spec.name)
        if existing is not None and existing["spec_sha256"] != spec.sha256:
            return problem(409, "job_exists", f"job {spec.name!r} exists with another spec")
        if existing is not None:
            return httpx.Response(200, json=existing)
        job = job_record(spec.name, spec.sha256, description=spec.description)
        job["target_updates"] = spec.stop.target_updates
        self.jobs[spec.name] = job
        return httpx.Response(201, json=job)

    def _change(self, job: dict[str, Any], action: str) -> httpx.Response:
        state = job["state"]
        if action == "pause":
            if state == "done":
                return problem(409, "job_not_training", "the job is done")
            self._resumes_to.setdefault(job["name"], state)
            job["state"] = "paused"
        elif action == "resume":
            if state != "paused":
                return problem(409, "job_not_paused", f"the job is {state}")
            job["state"] = self._resumes_to.pop(job["name"])
        elif action == "stop":
            job.update(state="done", stop_reason=job["stop_reason"] or "stopped")
        else:
            return problem(404, "not_found", "no such path")
        return httpx.Response(200, json=job)
