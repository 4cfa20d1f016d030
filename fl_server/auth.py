"""Access tokens: client and administrator tokens verified offline, the revoked set, sightings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from fl_server.errors import AuthError, ClientRevokedError
from fl_server.material import TokenKey
from hefl_wire import (
    ADMIN_ROLE,
    CLIENT_ROLE,
    VIEWER_ROLE,
    AccessClaims,
    TokenError,
    TokenVerifier,
)

__all__ = ["Sightings", "TokenAuth"]

# Verified tokens remembered (by hash) until they expire: a client sends one token for
# minutes of requests, and its Ed25519 check was the largest part of the server's work on a
# small request. Far more than the hospitals and viewers of any server at once; an evicted
# token is only checked again.
_VERIFIED_TOKENS = 4096


class TokenAuth:
    """Checks access tokens offline with keyauth's verification key, for every job alike.

    A client token is refused once keyauth lists its client as revoked (checked on every
    request, remembered tokens included: the signature check alone is cached); an administrator
    token (``role="admin"``, from keyauth's ``POST /v1/admin/token``) is verified by the
    same key: the server holds no admin secret of its own.

    Parameters
    ----------
    key
        The token verification key, issuer and audience.
    """

    def __init__(self, key: TokenKey) -> None:
        self._verifier = TokenVerifier(
            key.verification_key_pem,
            issuer=key.issuer,
            audience=key.audience,
            cache_size=_VERIFIED_TOKENS,
        )
        self._revoked: frozenset[str] = frozenset()

    def client(self, token: str) -> AccessClaims:
        """The claims of a valid client token whose client is not revoked."""
        return self._verify(token, (CLIENT_ROLE,))

    def admin(self, token: str) -> AccessClaims:
        """The claims of a valid administrator token."""
        return self._verify(token, (ADMIN_ROLE,))

    def reader(self, token: str) -> AccessClaims:
        """The claims of a valid client (not revoked) or administrator token."""
        return self._verify(token, (CLIENT_ROLE, ADMIN_ROLE))

    def status_reader(self, token: str) -> AccessClaims:
        """The claims of a valid viewer, administrator or client (not revoked) token."""
        return self._verify(token, (VIEWER_ROLE, ADMIN_ROLE, CLIENT_ROLE))

    def _verify(self, token: str, roles: tuple[str, ...]) -> AccessClaims:
        try:
            claims = self._verifier.verify(token, role=roles)
        except TokenError as exc:
            raise AuthError.from_token(exc) from None
        if claims.role == CLIENT_ROLE and claims.client_id in self._revoked:
            raise ClientRevokedError(f"client {claims.client_id} has been revoked")
        return claims

    def set_revoked(self, client_ids: Iterable[str]) -> None:
        """Replace the set of revoked client ids (from keyauth's revocation list)."""
        self._revoked = frozenset(client_ids)

    def is_revoked(self, client_id: str) -> bool:
        """Whether keyauth lists ``client_id`` as revoked (as last fetched)."""
        return client_id in self._revoked


class Sightings:
    """When each client last acted on one job, and under which name, since the server started.

    Parameters
    ----------
    clock
        Seconds since the epoch.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, float]] = {}

    def saw(self, client: AccessClaims) -> None:
        with self._lock:
            self._seen[client.client_id] = (client.client_name, self._clock())

    def last_seen(self) -> dict[str, tuple[str, float]]:
        """Each client's name and when it last acted on the job."""
        with self._lock:
            return dict(self._seen)
