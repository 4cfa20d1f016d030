"""Client authentication: access-token verification, the revoked set, when each client was seen."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from fl_server.errors import AuthError, ClientRevokedError
from fl_server.material import KeyauthMaterial
from hefl_wire import AccessClaims, TokenError, TokenVerifier

__all__ = ["ClientAuth"]


class ClientAuth:
    """Checks client access tokens offline with keyauth's verification key.

    Parameters
    ----------
    material
        The token verification key, issuer and audience.
    clock
        Seconds since the epoch, recorded as each client's last sighting.
    """

    def __init__(
        self, material: KeyauthMaterial, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._verifier = TokenVerifier(
            material.verification_key_pem, issuer=material.issuer, audience=material.audience
        )
        self._clock = clock
        self._revoked: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, float]] = {}

    def authenticate(self, token: str) -> AccessClaims:
        """The claims of a valid client token whose client is not revoked."""
        try:
            claims = self._verifier.verify(token)
        except TokenError as exc:
            raise AuthError.from_token(exc) from None
        if claims.client_id in self._revoked:
            raise ClientRevokedError(f"client {claims.client_id} has been revoked")
        with self._lock:
            self._seen[claims.client_id] = (claims.client_name, self._clock())
        return claims

    def set_revoked(self, client_ids: Iterable[str]) -> None:
        """Replace the set of revoked client ids (from keyauth's revocation list)."""
        self._revoked = frozenset(client_ids)

    def last_seen(self) -> dict[str, tuple[str, float]]:
        """Each client's name and when it last authenticated, since the server started."""
        with self._lock:
            return dict(self._seen)
