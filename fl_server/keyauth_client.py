"""What the server fetches from keyauth: the keyless context, the token key, revocations."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

import crypto
from fl_server.errors import KeyauthUnavailableError, StartupError
from fl_server.material import KeyauthMaterial
from fl_server.settings import ServerSettings

__all__ = ["KeyauthClient"]

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

    async def fetch_material(self, key_epoch: int | None) -> KeyauthMaterial:
        """The keyless context of ``key_epoch`` (the current one if ``None``) and the token key.

        Retries while keyauth is unreachable or answers 5xx, with a doubling delay.

        Raises
        ------
        KeyauthUnavailableError
            keyauth did not answer usefully within ``keyauth_attempts`` attempts.
        StartupError
            keyauth answered with something the server cannot use (e.g. no such epoch).
        """
        settings = self._settings
        delay = settings.keyauth_retry_delay
        started = time.monotonic()
        last_error = ""
        for attempt in range(1, settings.keyauth_attempts + 1):
            try:
                return await self._fetch_once(key_epoch)
            except _Permanent as exc:
                raise StartupError(f"keyauth at {settings.keyauth_url}: {exc}") from None
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if attempt < settings.keyauth_attempts:
                logger.warning(
                    "keyauth at %s not ready (attempt %d/%d: %s); retrying in %.1f s",
                    settings.keyauth_url,
                    attempt,
                    settings.keyauth_attempts,
                    last_error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(2 * delay, _MAX_RETRY_DELAY)
        raise KeyauthUnavailableError(
            f"keyauth at {settings.keyauth_url} gave no public context and verification key "
            f"after {settings.keyauth_attempts} attempts over {time.monotonic() - started:.0f} s "
            f"(last: {last_error}); start keyauth first or set FLSERVER_KEYAUTH_URL"
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

    async def _fetch_once(self, key_epoch: int | None) -> KeyauthMaterial:
        params = {"epoch": key_epoch} if key_epoch is not None else None
        context = await self._get("/v1/keys/public-context", params)
        key = await self._get("/v1/keys/verification-key")
        try:
            epoch = int(context.headers["X-Hefl-Key-Epoch"])
            profile = crypto.get_profile(context.headers["X-Hefl-Profile"]).name
            raw = key.json()
            algorithm, pem = raw["algorithm"], raw["public_key_pem"]
            issuer, audience = str(raw["issuer"]), str(raw["audience"])
        except (KeyError, ValueError, TypeError, crypto.ProfileError) as exc:
            raise _Permanent(f"unexpected answer ({type(exc).__name__}: {exc})") from None
        if algorithm != "EdDSA" or not isinstance(pem, str):
            raise _Permanent(f"unsupported token algorithm {algorithm!r}")
        if key_epoch is not None and epoch != key_epoch:
            raise _Permanent(f"asked for key epoch {key_epoch}, got {epoch}")
        return KeyauthMaterial(
            public_context=context.content,
            key_epoch=epoch,
            profile=profile,
            verification_key_pem=pem,
            issuer=issuer,
            audience=audience,
        )

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
