"""What the server fetches from keyauth: the token key, each epoch's context, revocations."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

import crypto
from fl_server.errors import KeyauthUnavailableError, StartupError
from fl_server.material import EpochContext, MaterialSource, TokenKey
from fl_server.settings import ServerSettings
from hefl_wire import KeyIdStatement, KeyIdVerifier, KeyStatementError

__all__ = ["KeyauthClient", "KeyauthMaterialSource", "Revocations"]

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

    async def fetch_key_id(
        self, key_epoch: int, verifier: KeyIdVerifier, *, attempts: int | None = None
    ) -> KeyIdStatement:
        """keyauth's statement of ``key_epoch``'s key id, verified, retried.

        Raises
        ------
        StartupError
            No such epoch, or a statement that does not verify with ``verifier``.
        """
        return await self._retrying(
            lambda: self._key_id_once(key_epoch, verifier),
            f"key id of key epoch {key_epoch}",
            attempts,
        )

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

    async def _key_id_once(self, key_epoch: int, verifier: KeyIdVerifier) -> KeyIdStatement:
        answer = await self._get("/v1/keys/key-id", {"epoch": key_epoch})
        try:
            signed = answer.json()["statement"]
            # Only the signed statement counts: the plain fields beside it are for people.
            return verifier.verify(str(signed), key_epoch=key_epoch)
        except (KeyError, ValueError, TypeError) as exc:
            reason = str(exc) if isinstance(exc, KeyStatementError) else repr(exc)
            raise _Permanent(
                f"its statement of key epoch {key_epoch}'s key id is refused ({reason}); "
                "if keyauth's state directory was replaced since fl_server started, "
                "restart fl_server so that it fetches keyauth's token key again"
            ) from None

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

    async def fetch_revoked(self, etag: str | None = None) -> Revocations | None:
        """keyauth's revocation list, asked with ``etag`` (``If-None-Match``).

        Returns ``None`` if keyauth publishes no revocation list, and a list whose
        ``client_ids`` is ``None`` if it is still the one ``etag`` names (304).
        """
        headers = {"If-None-Match": etag} if etag else None
        response = await self._http.get("/v1/revocations", headers=headers)
        if response.status_code == 404:
            return None
        if response.status_code == 304:
            return Revocations(None, etag)
        response.raise_for_status()
        ids = response.json()["revoked"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("revocation list must be a list of client ids")
        return Revocations(frozenset(ids), response.headers.get("ETag"))

    async def poll_revocations(
        self, on_revoked: Callable[[frozenset[str]], None], interval: float
    ) -> None:
        """Hand keyauth's revoked client ids to ``on_revoked`` until cancelled.

        Asks every ``interval`` seconds with the last ETag: an unchanged list is a 304
        and no call. While keyauth cannot be reached the set in force stays, and that is
        logged once when it starts and once when it ends, not at every attempt.
        """
        etag: str | None = None
        failing = False
        while True:
            try:
                listed = await self.fetch_revoked(etag)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                if not failing:
                    logger.warning(
                        "could not refresh revocations from keyauth (%s); retrying every "
                        "%.1f s, the revoked clients known so far stay refused",
                        exc,
                        interval,
                    )
                failing = True
            else:
                if listed is None:
                    logger.warning(
                        "keyauth publishes no revocation list: a revoked client keeps access "
                        "until its access token expires"
                    )
                    return
                if failing:
                    logger.info("revocations from keyauth are refreshed again")
                    failing = False
                if listed.client_ids is not None:
                    on_revoked(listed.client_ids)
                    etag = listed.etag
            await asyncio.sleep(interval)


@dataclasses.dataclass(frozen=True)
class Revocations:
    """keyauth's revocation list and its ETag; ``client_ids`` ``None``: not modified."""

    client_ids: frozenset[str] | None
    etag: str | None


class KeyauthMaterialSource(MaterialSource):
    """The key material, fetched from keyauth and cached: the token key once, each epoch's
    context and key id once, the current epoch each time asked.

    Each context comes with its epoch's key id from keyauth's signed statement, verified
    with the token key. At startup every fetch is retried (``keyauth_attempts``); as a job
    is created, the current epoch is asked for a few times only, so the administrator gets
    an answer (503 ``keyauth_unavailable``) instead of a request that hangs for minutes.
    """

    def __init__(self, client: KeyauthClient, *, creation_attempts: int = 2) -> None:
        self.client = client
        self._creation_attempts = creation_attempts
        self._token_key: TokenKey | None = None
        self._verifier: KeyIdVerifier | None = None
        self._contexts: dict[int, EpochContext] = {}

    async def token_key(self) -> TokenKey:
        if self._token_key is None:
            self._token_key = await self.client.fetch_token_key()
        return self._token_key

    async def _key_id_verifier(self) -> KeyIdVerifier:
        if self._verifier is None:
            key = await self.token_key()
            try:
                self._verifier = KeyIdVerifier(
                    key.verification_key_pem, issuer=key.issuer, audience=key.audience
                )
            except ValueError as exc:
                raise StartupError(f"keyauth's verification key is unusable: {exc}") from None
        return self._verifier

    async def _with_key_id(self, context: EpochContext, attempts: int | None) -> EpochContext:
        verifier = await self._key_id_verifier()
        stated = await self.client.fetch_key_id(context.key_epoch, verifier, attempts=attempts)
        if stated.profile != context.profile:
            raise StartupError(
                f"keyauth states profile {stated.profile!r} for key epoch {context.key_epoch},"
                f" its public context says {context.profile!r}"
            )
        return dataclasses.replace(context, key_id=stated.key_id)

    async def current_context(self) -> EpochContext:
        attempts = self._creation_attempts
        context = await self.client.fetch_context(None, attempts=attempts)
        context = await self._with_key_id(context, attempts)
        # The newest answer wins: keys generated again under this number replace the old.
        self._contexts[context.key_epoch] = context
        return context

    async def epoch_context(self, key_epoch: int) -> EpochContext:
        cached = self._contexts.get(key_epoch)
        if cached is None:
            cached = await self._with_key_id(await self.client.fetch_context(key_epoch), None)
            self._contexts[key_epoch] = cached
        return cached

    async def aclose(self) -> None:
        await self.client.aclose()
