"""The retrying edge every outbound client shares: options, the https rule, one retry loop."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from fl_client.errors import ConfigError, InsecureTransportError, TransportError
from fl_client.rounds.port import OnChunk
from fl_client.settings import ClientSettings
from fl_client.transport.answers import parse_retry_after, raise_for_problem
from hefl_wire import is_loopback_host

__all__ = ["RETRY_STATUSES", "ClientOptions", "Edge", "RetryPolicy", "require_secure_url"]

log = logging.getLogger(__name__)

USER_AGENT = "hefl-client/0.1.0"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def require_secure_url(url: str, *, allow_insecure_http: bool) -> str:
    """Return ``url`` if it is https, or http to a loopback host; refuse it otherwise.

    Loopback is ``hefl_wire.is_loopback_host``: the rule keyauth applies too.

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
    if not is_loopback_host(host):
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


@dataclass(frozen=True)
class ClientOptions:
    """How an outbound client reaches one service.

    Attributes
    ----------
    base_url
        e.g. ``https://fl.example.org``; plain http only to loopback unless allowed.
    allow_insecure_http
        Allow plain http to a non-loopback host (``--allow-insecure-http``).
    transport
        An httpx transport to use instead of the network (tests).
    timeout
        Per-request timeout, seconds.
    retry
        How connection errors, 5xx and 429 are retried.
    sleep
        How a retry waits (tests record instead).
    rng
        Source of the backoff jitter (tests seed it).
    """

    base_url: str
    allow_insecure_http: bool = False
    transport: httpx.BaseTransport | None = None
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random | None = None

    @classmethod
    def from_settings(
        cls,
        base_url: str,
        settings: ClientSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ClientOptions:
        """The options ``settings`` give for the service at ``base_url``."""
        return cls(
            base_url,
            allow_insecure_http=settings.allow_insecure_http,
            transport=transport,
            timeout=settings.timeout,
            retry=RetryPolicy(
                max_attempts=settings.max_attempts,
                backoff_base=settings.backoff_base,
                backoff_max=settings.backoff_max,
            ),
            sleep=sleep,
        )


class Edge:
    """One base URL, one httpx client, one retry loop."""

    def __init__(self, options: ClientOptions) -> None:
        self.base_url = require_secure_url(
            options.base_url.rstrip("/"), allow_insecure_http=options.allow_insecure_http
        )
        self._client = httpx.Client(
            base_url=self.base_url,
            transport=options.transport,
            timeout=httpx.Timeout(options.timeout),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        self._retry = options.retry
        self._sleep = options.sleep
        self._rng = options.rng or random.Random()  # noqa: S311 - backoff jitter, not a secret

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        retry_statuses: Collection[int] = RETRY_STATUSES,
        on_chunk: OnChunk | None = None,
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
                    raise_for_problem(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                reason = f"HTTP {response.status_code}"
            delay = self._retry.delay(attempt, self._rng, retry_after)
            log.warning("%s: %s; retry %d in %.1fs", what, reason, attempt, delay)
            self._sleep(delay)

    def _send(
        self, method: str, path: str, *, on_chunk: OnChunk | None, **kwargs: Any
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
