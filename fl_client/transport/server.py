"""The client side of fl_server's REST surface: its jobs, and ``ServerPort`` for one of them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from fl_client.errors import AccessTokenError, ConfigError, ProtocolError
from fl_client.rounds.port import (
    IntegrityReport,
    JobInfo,
    JobIntegrity,
    LeasedModel,
    ModelDownload,
    OnChunk,
    Probe,
    Rotation,
    SlotLease,
    UpdateAck,
    metrics_report_json,
)
from fl_client.state import EnvelopeFile
from fl_client.transport.answers import json_field, json_object
from fl_client.transport.edge import RETRY_STATUSES, ClientOptions, Edge

__all__ = ["METRICS_HEADER", "JobClient", "ServerClient", "TokenSource", "job_from_json"]

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
METRICS_HEADER = "X-Hefl-Metrics"
RECEIPT_HEADER = "X-Hefl-Update-Receipt"
"""An update's receipt (the 202's JSON body) in its answer that carries the next lease."""


class TokenSource(Protocol):
    """Where the server client gets a bearer token from."""

    def get(self) -> str: ...

    def invalidate(self) -> None: ...


class ServerClient:
    """The client side of fl_server's REST surface.

    Parameters
    ----------
    options
        fl_server's URL (e.g. ``https://fl.example.org``), transport, timeout, retries.
    tokens
        Source of bearer tokens; on a refused token it is invalidated and the request
        is sent once more with a fresh one.
    """

    def __init__(self, options: ClientOptions, *, tokens: TokenSource | None = None) -> None:
        self._edge = Edge(options)
        self.base_url = self._edge.base_url
        self._tokens = tokens

    def close(self) -> None:
        self._edge.close()

    def _authed(self, method: str, path: str, *, what: str, **kwargs: Any) -> httpx.Response:
        if self._tokens is None:
            raise ConfigError(f"{what} needs an access token: this client has no credential")
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in (1, 2):
            headers["Authorization"] = f"Bearer {self._tokens.get()}"
            try:
                return self._edge.request(method, path, what=what, headers=headers, **kwargs)
            except AccessTokenError as exc:
                if attempt == 2 or exc.code not in ("token_expired", "token_invalid"):
                    raise
                log.info("%s: access token refused (%s); fetching a new one", what, exc.code)
                self._tokens.invalidate()
        raise AssertionError("unreachable")  # pragma: no cover

    def jobs(self) -> list[JobInfo]:
        """Every job of the server, by name (``GET /v1/jobs``)."""
        what = "jobs"
        try:
            body = self._authed("GET", "/v1/jobs", what=what).json()
        except ValueError as exc:
            raise ProtocolError(f"{what}: answer is not JSON") from exc
        if not isinstance(body, list):
            raise ProtocolError(f"{what}: answer is not a JSON list")
        return [job_from_json(item, what) for item in body]

    def job(self, name: str) -> JobInfo:
        """One job (``GET /v1/jobs/{job}``); ``JobNotFoundError`` if there is none."""
        what = f"job {name}"
        return job_from_json(
            json_object(self._authed("GET", _job_path(name), what=what), what), what
        )

    def spec(self, name: str) -> bytes:
        """The job's spec, canonical JSON (``GET /v1/jobs/{job}/spec``)."""
        return self._authed("GET", _job_path(name, "spec"), what=f"spec of job {name}").content

    def status(self, name: str | None = None) -> dict[str, Any]:
        """The status of one job, or ``{"jobs": [...]}`` for every job.

        Read with this client's access token when it has a token source; without one only
        a server whose status is public (``FLSERVER_STATUS_ACCESS=public``) answers.
        """
        path = _job_path(name, "status") if name is not None else "/v1/status"
        if self._tokens is None:
            answer = self._edge.request("GET", path, what="status")
        else:
            answer = self._authed("GET", path, what="status")
        return json_object(answer, "status")

    def for_job(self, name: str) -> JobClient:
        """The rounds' port onto one job of this server."""
        return JobClient(self, name)


def _job_path(name: str, *rest: str) -> str:
    # job names are [a-z0-9-] (hefl_study): safe in a path as they are
    return "/".join(("/v1/jobs", name, *rest))


def job_from_json(body: object, what: str) -> JobInfo:
    """A ``Job`` of docs/protocol.md, its fields checked."""
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: a job is not a JSON object")
    fingerprint = body.get("layout_fingerprint")
    target = body.get("target_updates")
    try:
        fp = bytes.fromhex(fingerprint) if fingerprint is not None else None
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{what}: layout_fingerprint is not hex") from exc
    stop_reason = body.get("stop_reason")
    applied = body.get("updates_applied")
    key_id = body.get("key_id")
    if key_id is not None and not isinstance(key_id, str):
        raise ProtocolError(f"{what}: key_id is not a string")
    return JobInfo(
        name=json_field(body, "name", str, what),
        state=json_field(body, "state", str, what),
        version=json_field(body, "version", int, what),
        target_updates=target if isinstance(target, int) else None,
        layout_fingerprint=fp,
        key_epoch=json_field(body, "key_epoch", int, what),
        profile=json_field(body, "profile", str, what),
        spec_sha256=json_field(body, "spec_sha256", str, what),
        description=str(body.get("description") or ""),
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
        updates_applied=applied if isinstance(applied, int) else 0,
        key_id=key_id,
        integrity=_integrity(body.get("integrity"), what),
        rotation=_rotation(body.get("rotation"), what),
    )


def _rotation(body: object, what: str) -> Rotation | None:
    """A job's ``rotation``: the key rotation under way, if any."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: rotation is not a JSON object")
    key_id, client_id = body.get("key_id"), body.get("client_id")
    if not isinstance(key_id, str | None) or not isinstance(client_id, str | None):
        raise ProtocolError(f"{what}: rotation ids are not strings")
    where = f"{what}: rotation"
    return Rotation(
        key_epoch=json_field(body, "key_epoch", int, where),
        version=json_field(body, "version", int, where),
        key_id=key_id,
        client_id=client_id,
    )


def _integrity(body: object, what: str) -> JobIntegrity:
    """A job's ``integrity``; a server that does not say it has a healthy job."""
    if body is None:
        return JobIntegrity()
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: integrity is not a JSON object")
    probe = body.get("probe")
    if probe is not None:
        if not isinstance(probe, dict):
            raise ProtocolError(f"{what}: integrity.probe is not a JSON object")
        update_id, client_id = probe.get("update_id"), probe.get("client_id")
        if not isinstance(update_id, str | None) or not isinstance(client_id, str | None):
            raise ProtocolError(f"{what}: integrity.probe ids are not strings")
        probe = Probe(
            json_field(probe, "version", int, f"{what}: integrity.probe"), update_id, client_id
        )
    return JobIntegrity(state=json_field(body, "state", str, f"{what}: integrity"), probe=probe)


class JobClient:
    """``ServerPort`` over HTTP: one job's paths, ``/v1/jobs/{job}/...``, with the client token.

    Parameters
    ----------
    server
        The server client whose connection, retries and tokens it uses.
    name
        The job.
    """

    def __init__(self, server: ServerClient, name: str) -> None:
        self._server = server
        self.name = name

    def _authed(self, method: str, path: str, *, what: str, **kwargs: Any) -> httpx.Response:
        return self._server._authed(method, _job_path(self.name, path), what=what, **kwargs)

    def job(self) -> JobInfo:
        return self._server.job(self.name)

    def spec(self) -> bytes:
        return self._server.spec(self.name)

    def put_layout(self, layout_json: bytes) -> bool:
        """Set the job's layout; ``True`` if this call created it, ``False`` if it was equal."""
        response = self._authed(
            "PUT",
            "layout",
            what="put layout",
            content=layout_json,
            headers={"Content-Type": "application/json"},
        )
        return response.status_code == 201

    def get_layout(self) -> bytes:
        return self._authed("GET", "layout", what="get layout").content

    def put_initial_model(self, envelope: bytes) -> None:
        self._authed(
            "PUT",
            "initial-model",
            what="put initial model",
            content=envelope,
            headers={"Content-Type": OCTET_STREAM},
        )

    def put_rotated_model(self, envelope: bytes) -> JobInfo:
        what = "put re-encrypted model"
        response = self._authed(
            "PUT", "rotation", what=what, content=envelope, headers={"Content-Type": OCTET_STREAM}
        )
        return job_from_json(json_object(response, what), what)

    def get_model(
        self,
        *,
        since: int | None = None,
        etag: str | None = None,
        on_chunk: OnChunk | None = None,
    ) -> ModelDownload | None:
        """The model envelope (only blocks changed after ``since``), or ``None`` on 304."""
        what = "pull model"
        headers = {"Accept": OCTET_STREAM}
        if etag is not None:
            headers["If-None-Match"] = etag
        response = self._authed(
            "GET",
            "model",
            what=what,
            params={"since": since} if since is not None else None,
            headers=headers,
            on_chunk=on_chunk,
        )
        if response.status_code == 304:
            return None
        return _download(response, what)

    def get_probe_model(
        self, version: int, update_id: str | None = None, *, on_chunk: OnChunk | None = None
    ) -> ModelDownload:
        """A version the server probes, whole; ``ProbeNotOfferedError`` if it no longer does."""
        what = f"probe of version {version}"
        params: dict[str, str | int] = {"version": version}
        if update_id is not None:
            params["update"] = update_id
        response = self._authed(
            "GET",
            "model",
            what=what,
            params=params,
            headers={"Accept": OCTET_STREAM},
            on_chunk=on_chunk,
        )
        return _download(response, what)

    def request_slot(self) -> SlotLease:
        """Ask for a training slot; a busy server raises ``RateLimitedError`` (not retried)."""
        what = "training slot"
        response = self._authed("POST", "slots", what=what, retry_statuses=RETRY_STATUSES - {429})
        body = json_object(response, what)
        return SlotLease(expires_at=str(body.get("expires_at", "")))

    def release_slot(self) -> None:
        self._authed("DELETE", "slots", what="release slot")

    def lease_model(
        self, *, since: int | None = None, on_chunk: OnChunk | None = None
    ) -> LeasedModel:
        """A training slot and the model in one request (``POST …/leases``); a busy server
        raises ``RateLimitedError`` (not retried: the caller waits as it asks)."""
        what = "lease and pull model"
        response = self._authed(
            "POST",
            "leases",
            what=what,
            params={"since": since} if since is not None else None,
            headers={"Accept": OCTET_STREAM},
            on_chunk=on_chunk,
            retry_statuses=RETRY_STATUSES - {429},
        )
        return _leased(response, what)

    def push_update(
        self,
        envelope: bytes | EnvelopeFile,
        metrics: str | None = None,
        *,
        samples: int | None = None,
        lease_next: bool = False,
        since: int | None = None,
    ) -> UpdateAck:
        """Send an update (with a metrics report in ``X-Hefl-Metrics``); retried freely:
        the server acknowledges a resent update id, and keeps its report once.

        ``samples`` goes as ``X-Hefl-Samples``: the training rows behind the update.
        ``lease_next`` asks for the next round's lease and model (only the blocks changed
        after ``since``) with the answer (``?lease=next``): ``UpdateAck.leased`` when the
        server gave them, ``None`` when it answered the plain 202 (or knows no such thing).
        """
        what = "push update"
        params: dict[str, str | int] = {}
        if lease_next:
            params["lease"] = "next"
            if since is not None:
                params["since"] = since
        headers = {"Content-Type": OCTET_STREAM}
        if metrics is not None:
            headers[METRICS_HEADER] = metrics
        if samples is not None:
            headers["X-Hefl-Samples"] = str(samples)
        if isinstance(envelope, EnvelopeFile):
            # streamed from the file (read again for a retry), with its length declared
            headers["Content-Length"] = str(len(envelope))
        response = self._authed(
            "POST",
            "updates",
            what=what,
            content=envelope,
            headers=headers,
            params=params or None,
        )
        leased = None
        if lease_next and response.status_code == 200:
            leased = _leased(response, what)
            try:
                body = json.loads(response.headers[RECEIPT_HEADER])
            except (KeyError, ValueError) as exc:
                raise ProtocolError(f"{what}: {RECEIPT_HEADER} header missing or no JSON") from exc
            if not isinstance(body, dict):
                raise ProtocolError(f"{what}: {RECEIPT_HEADER} is not a JSON object")
        else:
            body = json_object(response, what)
        weight = body.get("weight")
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise ProtocolError(f"{what}: field 'weight' missing or not a number")
        return UpdateAck(
            update_id=json_field(body, "update_id", str, what),
            version=json_field(body, "version", int, what),
            staleness=json_field(body, "staleness", int, what),
            weight=float(weight),
            duplicate=bool(body.get("duplicate", False)),
            leased=leased,
        )

    def post_metrics(
        self,
        version: int,
        metrics: Mapping[str, float | int],
        privacy: Mapping[str, float] | None = None,
    ) -> None:
        body = metrics_report_json(version, metrics, privacy)
        self._authed("POST", "metrics", what="post metrics", json=body)

    def post_integrity(self, report: IntegrityReport) -> str:
        """Report a model version's checks; the job's integrity state after it."""
        what = "integrity report"
        response = self._authed("POST", "integrity", what=what, json=report.to_json())
        return str(json_object(response, what).get("state", ""))


def _leased(response: httpx.Response, what: str) -> LeasedModel:
    """The lease and model of ``POST …/leases`` (or of an update's 200 with ``lease=next``)."""
    try:
        job_version = int(response.headers["X-Hefl-Job-Version"])
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"{what}: X-Hefl-Job-Version header missing") from exc
    return LeasedModel(
        download=_download(response, what),
        expires_at=response.headers.get("X-Hefl-Lease-Expires", ""),
        job_state=response.headers.get("X-Hefl-Job-State", ""),
        job_version=job_version,
    )


def _download(response: httpx.Response, what: str) -> ModelDownload:
    try:
        version = int(response.headers["X-Hefl-Model-Version"])
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"{what}: X-Hefl-Model-Version header missing") from exc
    return ModelDownload(data=response.content, version=version, etag=response.headers.get("ETag"))
