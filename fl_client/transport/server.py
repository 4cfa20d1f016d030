"""The client side of fl_server's REST surface: the HTTP implementation of ``ServerPort``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from fl_client.errors import AccessTokenError, ConfigError, ProtocolError
from fl_client.rounds.port import JobInfo, ModelDownload, OnChunk, SlotLease, UpdateAck
from fl_client.transport.answers import json_field, json_object
from fl_client.transport.edge import RETRY_STATUSES, ClientOptions, Edge

__all__ = ["ServerClient", "TokenSource"]

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"


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

    def job(self) -> JobInfo:
        what = "job"
        body = json_object(self._edge.request("GET", "/v1/job", what=what), what)
        fingerprint = body.get("layout_fingerprint")
        target = body.get("target_updates")
        try:
            fp = bytes.fromhex(fingerprint) if fingerprint is not None else None
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"{what}: layout_fingerprint is not hex") from exc
        return JobInfo(
            state=json_field(body, "state", str, what),
            version=json_field(body, "version", int, what),
            target_updates=target if isinstance(target, int) else None,
            layout_fingerprint=fp,
            key_epoch=json_field(body, "key_epoch", int, what),
            profile=json_field(body, "profile", str, what),
        )

    def put_layout(self, layout_json: bytes) -> bool:
        """Set the job's layout; ``True`` if this call created it, ``False`` if it was equal."""
        response = self._authed(
            "PUT",
            "/v1/job/layout",
            what="put layout",
            content=layout_json,
            headers={"Content-Type": "application/json"},
        )
        return response.status_code == 201

    def get_layout(self) -> bytes:
        return self._edge.request("GET", "/v1/job/layout", what="get layout").content

    def put_initial_model(self, envelope: bytes) -> None:
        self._authed(
            "PUT",
            "/v1/job/initial-model",
            what="put initial model",
            content=envelope,
            headers={"Content-Type": OCTET_STREAM},
        )

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
        response = self._edge.request(
            "GET",
            "/v1/model",
            what=what,
            params={"since": since} if since is not None else None,
            headers=headers,
            on_chunk=on_chunk,
        )
        if response.status_code == 304:
            return None
        try:
            version = int(response.headers["X-Hefl-Model-Version"])
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"{what}: X-Hefl-Model-Version header missing") from exc
        return ModelDownload(
            data=response.content, version=version, etag=response.headers.get("ETag")
        )

    def request_slot(self) -> SlotLease:
        """Ask for a training slot; a busy server raises ``RateLimitedError`` (not retried)."""
        what = "training slot"
        response = self._authed(
            "POST", "/v1/slots", what=what, retry_statuses=RETRY_STATUSES - {429}
        )
        body = json_object(response, what)
        return SlotLease(expires_at=str(body.get("expires_at", "")))

    def release_slot(self) -> None:
        self._authed("DELETE", "/v1/slots", what="release slot")

    def push_update(self, envelope: bytes) -> UpdateAck:
        """Send an update; retried freely: the server acknowledges a resent update id."""
        what = "push update"
        response = self._authed(
            "POST",
            "/v1/updates",
            what=what,
            content=envelope,
            headers={"Content-Type": OCTET_STREAM},
        )
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
        )

    def post_metrics(self, version: int, metrics: Mapping[str, float | int]) -> None:
        self._authed(
            "POST",
            "/v1/metrics",
            what="post metrics",
            json={"version": version, "metrics": dict(metrics)},
        )

    def status(self) -> dict[str, Any]:
        return json_object(self._edge.request("GET", "/v1/status", what="status"), "status")
