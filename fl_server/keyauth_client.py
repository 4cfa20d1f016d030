"""What the server fetches from keyauth: the token key, each epoch's context, revocations."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

import crypto
from fl_server.errors import KeyauthUnavailableError, StartupError
from fl_server.material import EpochContext, MaterialSource, TokenKey
from fl_server.settings import ServerSettings

__all__ = ["KeyauthClient", "KeyauthMaterialSource"]

T = TypeVar("T")

logger = logging.getLogger("fl_server.keyauth")

_MAX_RETRY_DELAY = 10.0
# The public context is ~100 bytes and the verification key ~1 KiB; refuse anything huge.
_MAX_RESPONSE_BYTES = 1024 * 1024


class _Permanent(Exception):
    """keyauth answered, and retrying will not change the answer."""


class KeyauthClient:
    """A small client of keyauth's public endpoints.

    Parameters
    ----------
    settings
        ``keyauth_url``, timeouts and retry policy.
    transport
        An httpx transport (tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self, settings: ServerSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._http = httpx.AsyncClient(
            base_url=settings.keyauth_url.rstrip("/"),
            timeout=settings.keyauth_timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch_token_key(self, *, attempts: int | None = None) -> TokenKey:
        """The token verification key, retried while keyauth is down (``_retrying``)."""
        return await self._retrying(self._token_key_once, "verification key", attempts)

    async def fetch_context(
        self, key_epoch: int | None, *, attempts: int | None = None
    ) -> EpochContext:
        """The keyless context of ``key_epoch`` (the current one if ``None``), retried."""
        what = "public context" if key_epoch is None else f"public context of key epoch {key_epoch}"
        return await self._retrying(lambda: self._context_once(key_epoch), what, attempts)

    async def _retrying(
        self, fetch: Callable[[], Awaitable[T]], what: str, attempts: int | None
    ) -> T:
        """``fetch()``, retried while keyauth is unreachable or answers 5xx, the delay doubling.

        Raises
        ------
        KeyauthUnavailableError
            keyauth did not answer usefully within ``attempts`` (``keyauth_attempts``).
        StartupError
            keyauth answered with something the server cannot use (e.g. no such epoch).
        """
        settings = self._settings
        attempts = attempts or settings.keyauth_attempts
        delay = settings.keyauth_retry_delay
        started = time.monotonic()
        last_error = ""
        for attempt in range(1, attempts + 1):
            try:
                return await fetch()
            except _Permanent as exc:
                raise StartupError(f"keyauth at {settings.keyauth_url}: {exc}") from None
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                logger.warning(
                    "keyauth at %s not ready (attempt %d/%d: %s); retrying in %.1f s",
                    settings.keyauth_url,
                    attempt,
                    attempts,
                    last_error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(2 * delay, _MAX_RETRY_DELAY)
        raise KeyauthUnavailableError(
            f"keyauth at {settings.keyauth_url} gave no {what} after {attempts} attempt"
            f"{'s' if attempts > 1 else ''} over {time.monotonic() - started:.0f} s "
            f"(last: {last_error}); start keyauth first or set FLSERVER_KEYAUTH_URL",
            retry_after=_MAX_RETRY_DELAY,
        )

    async def _get(self, path: str, params: dict[str, int] | None = None) -> httpx.Response:
        response = await self._http.get(path, params=params)
        if response.status_code >= 500:
            response.raise_for_status()
        if response.status_code != 200:
            raise _Permanent(f"GET {path} answered {response.status_code}: {response.text[:200]}")
        if len(response.content) > _MAX_RESPONSE_BYTES:
            raise _Permanent(f"GET {path} answered {len(response.content)} bytes")
        return response

    async def _context_once(self, key_epoch: int | None) -> EpochContext:
        params = {"epoch": key_epoch} if key_epoch is not None else None
        context = await self._get("/v1/keys/public-context", params)
        try:
            epoch = int(context.headers["X-Hefl-Key-Epoch"])
            profile = crypto.get_profile(context.headers["X-Hefl-Profile"]).name
        except (KeyError, ValueError, crypto.ProfileError) as exc:
            raise _Permanent(f"unexpected answer ({type(exc).__name__}: {exc})") from None
        if key_epoch is not None and epoch != key_epoch:
            raise _Permanent(f"asked for key epoch {key_epoch}, got {epoch}")
        return EpochContext(key_epoch=epoch, profile=profile, public_context=context.content)

    async def _token_key_once(self) -> TokenKey:
        key = await self._get("/v1/keys/verification-key")
        try:
            raw = key.json()
            algorithm, pem = raw["algorithm"], raw["public_key_pem"]
            issuer, audience = str(raw["issuer"]), str(raw["audience"])
        except (KeyError, ValueError, TypeError) as exc:
            raise _Permanent(f"unexpected answer ({type(exc).__name__}: {exc})") from None
        if algorithm != "EdDSA" or not isinstance(pem, str):
            raise _Permanent(f"unsupported token algorithm {algorithm!r}")
        return TokenKey(verification_key_pem=pem, issuer=issuer, audience=audience)

    async def fetch_revoked(self) -> frozenset[str] | None:
        """Client ids keyauth has revoked; ``None`` if it publishes no revocation list."""
        response = await self._http.get("/v1/revocations")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        ids = response.json()["revoked"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("revocation list must be a list of client ids")
        return frozenset(ids)

    async def poll_revocations(
        self, on_revoked: Callable[[frozenset[str]], None], interval: float
    ) -> None:
        """Hand keyauth's revoked client ids to ``on_revoked`` until cancelled."""
        while True:
            try:
                revoked = await self.fetch_revoked()
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                logger.warning("could not refresh revocations from keyauth: %s", exc)
            else:
                if revoked is None:
                    logger.warning(
                        "keyauth publishes no revocation list: a revoked client keeps access "
                        "until its access token expires"
                    )
                    return
                on_revoked(revoked)
            await asyncio.sleep(interval)


class KeyauthMaterialSource(MaterialSource):
    """The key material, fetched from keyauth and cached: the token key once, each epoch's
    context once (an epoch's context never changes), the current epoch each time asked.

    At startup every fetch is retried (``keyauth_attempts``); as a job is created, the
    current epoch is asked for a few times only, so the administrator gets an answer
    (503 ``keyauth_unavailable``) instead of a request that hangs for minutes.
    """

    def __init__(self, client: KeyauthClient, *, creation_attempts: int = 2) -> None:
        self.client = client
        self._creation_attempts = creation_attempts
        self._token_key: TokenKey | None = None
        self._contexts: dict[int, EpochContext] = {}

    async def token_key(self) -> TokenKey:
        if self._token_key is None:
            self._token_key = await self.client.fetch_token_key()
        return self._token_key

    async def current_context(self) -> EpochContext:
        context = await self.client.fetch_context(None, attempts=self._creation_attempts)
        return self._contexts.setdefault(context.key_epoch, context)

    async def epoch_context(self, key_epoch: int) -> EpochContext:
        cached = self._contexts.get(key_epoch)
        if cached is None:
            cached = await self.client.fetch_context(key_epoch)
            self._contexts[key_epoch] = cached
        return cached

    async def aclose(self) -> None:
        await self.client.aclose()
