"""Thin httpx clients for keyauth and fl_server (docs/protocol.md), with retries.

The transport is injectable (``httpx.MockTransport``, ``httpx.ASGITransport``) so every
call is testable without a network. Problems (``application/problem+json``) become the
typed errors of ``fl_client.errors``; httpx's own errors are translated here, once.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import math
import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from fl_client.errors import (
    AccessTokenError,
    ConfigError,
    InsecureTransportError,
    ProtocolError,
    TransportError,
    error_from_problem,
)

__all__ = [
    "AccessToken",
    "Enrollment",
    "JobInfo",
    "KeyauthClient",
    "ModelDownload",
    "RetryPolicy",
    "SecretContext",
    "ServerClient",
    "SlotLease",
    "TokenManager",
    "TokenSource",
    "UpdateAck",
    "require_secure_url",
]

log = logging.getLogger(__name__)

USER_AGENT = "hefl-client/0.1.0"
OCTET_STREAM = "application/octet-stream"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def require_secure_url(url: str, *, allow_insecure_http: bool) -> str:
    """Return ``url`` if it is https, or http to a loopback host; refuse it otherwise.

    Raises
    ------
    InsecureTransportError
        Plain http to another host without ``allow_insecure_http``.
    ConfigError
        Not an http(s) URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not an http(s) URL: {url!r}")
    if parts.scheme == "https" or allow_insecure_http:
        return url
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if not loopback:
        # Clients share one secret key per epoch: without TLS, any client (or anyone on
        # the path) who sees an upload can decrypt it.
        raise InsecureTransportError(
            f"refusing plain http to {host}: use https, or pass --allow-insecure-http "
            "(FLCLIENT_ALLOW_INSECURE_HTTP=1) if the link is protected another way"
        )
    return url


@dataclass(frozen=True)
class RetryPolicy:
    """How a request is retried on connection errors, 5xx and 429.

    The n-th retry waits ``min(backoff_max, backoff_base * 2**(n-1))`` scaled by a random
    factor in [0.5, 1], or what ``Retry-After`` asks for (up to ``max_retry_after``).
    """

    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 600.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return float(base * rng.uniform(0.5, 1.0))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    problem = _problem_of(response)
    raise error_from_problem(
        response.status_code,
        problem,
        retry_after=_parse_retry_after(response.headers.get("Retry-After")),
    )


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProtocolError(f"{what}: answer is not JSON") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: answer is not a JSON object")
    return body


def _field(body: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    value = body.get(key)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise ProtocolError(f"{what}: field {key!r} missing or not {kind.__name__}")
    return value


class _Edge:
    """One base URL, one httpx client, one retry loop."""

    def __init__(
        self,
        base_url: str,
        *,
        allow_insecure_http: bool,
        transport: httpx.BaseTransport | None,
        timeout: float,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        rng: random.Random | None,
    ) -> None:
        self.base_url = require_secure_url(
            base_url.rstrip("/"), allow_insecure_http=allow_insecure_http
        )
        self._client = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        self._retry = retry
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not a secret

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        retry_statuses: Collection[int] = _RETRY_STATUSES,
        on_chunk: Callable[[int, int | None], object] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request, retrying transport errors and ``retry_statuses``; return a < 400 answer.

        Every request of the protocol is safe to resend (updates carry their id, enrollment
        is re-delivered until confirmed), so a lost answer is always retried.
        """
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = self._send(method, path, on_chunk=on_chunk, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self._retry.max_attempts:
                    raise TransportError(
                        f"{what}: {type(exc).__name__} talking to {self.base_url}"
                        f" after {attempt} attempt(s): {exc}"
                    ) from exc
                reason = type(exc).__name__
            else:
                if response.status_code < 400:
                    return response
                if (
                    response.status_code not in retry_statuses
                    or attempt >= self._retry.max_attempts
                ):
                    _raise_for_problem(response)
                retry_after = _parse_retry_after(response.headers.get("Retry-After"))
                reason = f"HTTP {response.status_code}"
            delay = self._retry.delay(attempt, self._rng, retry_after)
            log.warning("%s: %s; retry %d in %.1fs", what, reason, attempt, delay)
            self._sleep(delay)

    def _send(
        self,
        method: str,
        path: str,
        *,
        on_chunk: Callable[[int, int | None], object] | None,
        **kwargs: Any,
    ) -> httpx.Response:
        if on_chunk is None:
            return self._client.request(method, path, **kwargs)
        request = self._client.build_request(method, path, **kwargs)
        response = self._client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                return response
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            chunks = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                on_chunk(len(chunk), total)
        finally:
            response.close()
        # the same answer with its body, read once with progress and already decoded
        headers = httpx.Headers(response.headers)
        for name in ("Content-Encoding", "Content-Length", "Transfer-Encoding"):
            headers.pop(name, None)
        return httpx.Response(
            response.status_code, headers=headers, content=b"".join(chunks), request=request
        )


# -- keyauth ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrollment:
    client_id: str
    client_name: str
    client_secret: str = field(repr=False)
    key_epoch: int
    profile: str


@dataclass(frozen=True)
class AccessToken:
    token: str = field(repr=False)
    expires_in: float
    key_epoch: int


@dataclass(frozen=True)
class SecretContext:
    data: bytes = field(repr=False)
    key_epoch: int
    profile: str


class KeyauthClient:
    """The client side of keyauth's REST surface.

    Parameters
    ----------
    base_url
        e.g. ``https://keyauth.example.org``; plain http only to loopback unless allowed.
    transport
        An httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        allow_insecure_http: bool = False,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._edge = _Edge(
            base_url,
            allow_insecure_http=allow_insecure_http,
            transport=transport,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            sleep=sleep,
            rng=rng,
        )
        self.base_url = self._edge.base_url

    def close(self) -> None:
        self._edge.close()

    def enroll(self, token: str) -> Enrollment:
        """Redeem an enrollment token; retried like any idempotent request.

        keyauth answers a token it already redeemed with the same client id and secret
        (200 instead of 201) until the client's first access token, within its
        re-delivery window: an answer lost to a dropped connection or a restart is
        fetched again instead of leaving an enrolled client nobody holds the secret of.
        """
        what = "enroll"
        response = self._edge.request("POST", "/v1/enroll", what=what, json={"token": token})
        body = _json_object(response, what)
        return Enrollment(
            client_id=_field(body, "client_id", str, what),
            client_name=_field(body, "client_name", str, what),
            client_secret=_field(body, "client_secret", str, what),
            key_epoch=_field(body, "key_epoch", int, what),
            profile=_field(body, "profile", str, what),
        )

    def issue_token(self, client_id: str, client_secret: str) -> AccessToken:
        what = "access token"
        response = self._edge.request(
            "POST",
            "/v1/token",
            what=what,
            json={"client_id": client_id, "client_secret": client_secret},
        )
        body = _json_object(response, what)
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            raise ProtocolError(f"{what}: field 'expires_in' missing or not a number")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise ProtocolError(f"{what}: token_type is not bearer")
        return AccessToken(
            token=_field(body, "access_token", str, what),
            expires_in=float(expires_in),
            key_epoch=_field(body, "key_epoch", int, what),
        )

    def secret_context(self, access_token: str, key_epoch: int | None = None) -> SecretContext:
        what = "secret context"
        params = {"epoch": key_epoch} if key_epoch is not None else None
        response = self._edge.request(
            "GET",
            "/v1/keys/secret-context",
            what=what,
            params=params,
            headers={"Authorization": f"Bearer {access_token}"},
        )
        try:
            epoch = int(response.headers["X-Hefl-Key-Epoch"])
            profile = response.headers["X-Hefl-Profile"]
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"{what}: X-Hefl-Key-Epoch/X-Hefl-Profile headers missing") from exc
        if key_epoch is not None and epoch != key_epoch:
            raise ProtocolError(f"{what}: asked for epoch {key_epoch}, got {epoch}")
        return SecretContext(data=response.content, key_epoch=epoch, profile=profile)


class TokenSource(Protocol):
    """Where the server client gets a bearer token from."""

    def get(self) -> str: ...

    def invalidate(self) -> None: ...


class TokenManager:
    """Hands out a valid access token, fetching a new one shortly before expiry.

    The token lives in memory only; it is never logged nor written to disk.
    """

    def __init__(
        self,
        keyauth: KeyauthClient,
        client_id: str,
        client_secret: str,
        *,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keyauth = keyauth
        self._client_id = client_id
        self._client_secret = client_secret
        self._margin = refresh_margin
        self._clock = clock
        self._token: AccessToken | None = None
        self._valid_until = 0.0

    def __repr__(self) -> str:
        return f"TokenManager(client_id={self._client_id!r})"

    @property
    def current(self) -> AccessToken:
        self.get()
        assert self._token is not None
        return self._token

    def get(self) -> str:
        now = self._clock()
        if self._token is None or now >= self._valid_until:
            issued_at = now
            self._token = self._keyauth.issue_token(self._client_id, self._client_secret)
            # refresh early, but never later than half the lifetime for short tokens
            margin = min(self._margin, self._token.expires_in / 2)
            self._valid_until = issued_at + self._token.expires_in - margin
        return self._token.token

    def invalidate(self) -> None:
        self._token = None


# -- fl_server -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobInfo:
    state: str
    version: int
    target_updates: int | None
    layout_fingerprint: bytes | None
    key_epoch: int
    profile: str


@dataclass(frozen=True)
class ModelDownload:
    data: bytes = field(repr=False)
    version: int
    etag: str | None


@dataclass(frozen=True)
class SlotLease:
    expires_at: str


@dataclass(frozen=True)
class UpdateAck:
    update_id: str
    version: int
    staleness: int
    weight: float
    duplicate: bool


class ServerClient:
    """The client side of fl_server's REST surface.

    Parameters
    ----------
    base_url
        e.g. ``https://fl.example.org``; plain http only to loopback unless allowed.
    tokens
        Source of bearer tokens; on a refused token it is invalidated and the request
        is sent once more with a fresh one.
    transport
        An httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        tokens: TokenSource | None = None,
        allow_insecure_http: bool = False,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._edge = _Edge(
            base_url,
            allow_insecure_http=allow_insecure_http,
            transport=transport,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            sleep=sleep,
            rng=rng,
        )
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

    def healthz(self) -> dict[str, Any]:
        return _json_object(self._edge.request("GET", "/healthz", what="healthz"), "healthz")

    def job(self) -> JobInfo:
        what = "job"
        body = _json_object(self._edge.request("GET", "/v1/job", what=what), what)
        fingerprint = body.get("layout_fingerprint")
        target = body.get("target_updates")
        try:
            fp = bytes.fromhex(fingerprint) if fingerprint is not None else None
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"{what}: layout_fingerprint is not hex") from exc
        return JobInfo(
            state=_field(body, "state", str, what),
            version=_field(body, "version", int, what),
            target_updates=target if isinstance(target, int) else None,
            layout_fingerprint=fp,
            key_epoch=_field(body, "key_epoch", int, what),
            profile=_field(body, "profile", str, what),
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
        on_chunk: Callable[[int, int | None], object] | None = None,
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
            "POST", "/v1/slots", what=what, retry_statuses=_RETRY_STATUSES - {429}
        )
        body = _json_object(response, what)
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
        body = _json_object(response, what)
        weight = body.get("weight")
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise ProtocolError(f"{what}: field 'weight' missing or not a number")
        return UpdateAck(
            update_id=_field(body, "update_id", str, what),
            version=_field(body, "version", int, what),
            staleness=_field(body, "staleness", int, what),
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
        return _json_object(self._edge.request("GET", "/v1/status", what="status"), "status")
