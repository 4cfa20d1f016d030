"""The client side of keyauth's REST surface, and the access token it keeps fresh."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fl_client.errors import ProtocolError
from fl_client.rounds.port import SecretContext
from fl_client.transport.answers import json_field, json_object
from fl_client.transport.edge import ClientOptions, Edge

__all__ = ["AccessToken", "Enrollment", "KeyauthClient", "TokenManager"]


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


class KeyauthClient:
    """The client side of keyauth's REST surface.

    Parameters
    ----------
    options
        keyauth's URL (e.g. ``https://keyauth.example.org``), transport, timeout, retries.
    """

    def __init__(self, options: ClientOptions) -> None:
        self._edge = Edge(options)
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
        body = json_object(response, what)
        return Enrollment(
            client_id=json_field(body, "client_id", str, what),
            client_name=json_field(body, "client_name", str, what),
            client_secret=json_field(body, "client_secret", str, what),
            key_epoch=json_field(body, "key_epoch", int, what),
            profile=json_field(body, "profile", str, what),
        )

    def issue_token(self, client_id: str, client_secret: str) -> AccessToken:
        what = "access token"
        response = self._edge.request(
            "POST",
            "/v1/token",
            what=what,
            json={"client_id": client_id, "client_secret": client_secret},
        )
        body = json_object(response, what)
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
            raise ProtocolError(f"{what}: field 'expires_in' missing or not a number")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise ProtocolError(f"{what}: token_type is not bearer")
        return AccessToken(
            token=json_field(body, "access_token", str, what),
            expires_in=float(expires_in),
            key_epoch=json_field(body, "key_epoch", int, what),
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
