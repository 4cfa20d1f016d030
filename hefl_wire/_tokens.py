"""Access tokens on the wire: their claims, their verification, and why they are refused."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hefl_wire._errors import ProblemError, bearer_challenge

__all__ = [
    "ADMIN_ROLE",
    "ADMIN_SUBJECT",
    "ALGORITHM",
    "AUDIENCE",
    "CLAIMS",
    "CLIENT_ROLE",
    "ISSUER",
    "MAX_TOKEN_CHARS",
    "PURPOSE_CLAIM",
    "ROLES",
    "VIEWER_ROLE",
    "VIEWER_SUBJECT",
    "AccessClaims",
    "TokenError",
    "TokenExpiredError",
    "TokenInvalidError",
    "TokenMissingError",
    "TokenVerifier",
    "TokenWrongRoleError",
    "claims_from_payload",
    "claims_to_payload",
    "load_verification_key",
]

ALGORITHM = "EdDSA"
ISSUER = "hefl-keyauth"
AUDIENCE = "hefl"
CLIENT_ROLE = "client"
ADMIN_ROLE = "admin"
VIEWER_ROLE = "viewer"
# Who holds access tokens: each hospital's client, the one administrator, and viewers the
# administrator lets read the status (the operator page) and nothing else. A route takes
# one of them (or several): a token of another role is refused, 403 token_wrong_role.
ROLES = (CLIENT_ROLE, ADMIN_ROLE, VIEWER_ROLE)
# The subject and name of every administrator token: one admin identity for both services.
ADMIN_SUBJECT = "admin"
# The subject and name of every viewer token: read-only, so viewers need no identities.
VIEWER_SUBJECT = "viewer"
# The claims every access token carries (docs/protocol.md).
CLAIMS = ("iss", "aud", "sub", "name", "role", "epoch", "iat", "exp", "jti")
# A real token is about 400 characters; anything far larger is not worth parsing.
MAX_TOKEN_CHARS = 4096
# The claim that tells keyauth's other signed statements from access tokens (which lack it).
PURPOSE_CLAIM = "purpose"
# What PyJWT itself must find; the rest is checked by claims_from_payload.
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]


class TokenError(ProblemError):
    """An access token that does not authorize the request (``token_invalid`` unless a
    subclass says more).

    ::

        TokenError                 token_invalid (401)
        ├── TokenInvalidError      token_invalid (401): malformed, forged, wrong issuer
        │                          or audience, a claim missing
        ├── TokenMissingError      token_missing (401)
        ├── TokenExpiredError      token_expired (401)
        └── TokenWrongRoleError    token_wrong_role (403)

    keyauth answers these as they are; fl_server answers them as its own ``AuthError``.
    """

    code = "token_invalid"
    http_status = 401
    title = "Access token not valid"

    @property
    def challenge(self) -> str | None:
        return bearer_challenge(self.code)


class TokenInvalidError(TokenError):
    code = "token_invalid"


class TokenMissingError(TokenError):
    code = "token_missing"


class TokenExpiredError(TokenError):
    code = "token_expired"


class TokenWrongRoleError(TokenError):
    code = "token_wrong_role"
    http_status = 403


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says about its bearer."""

    client_id: str
    client_name: str
    role: str
    key_epoch: int
    expires_at: float
    token_id: str


def claims_to_payload(
    claims: AccessClaims, *, issued_at: int, issuer: str = ISSUER, audience: str = AUDIENCE
) -> dict[str, Any]:
    """The JWT payload of ``claims`` (what keyauth signs)."""
    return {
        "iss": issuer,
        "aud": audience,
        "sub": claims.client_id,
        "name": claims.client_name,
        "role": claims.role,
        "epoch": claims.key_epoch,
        "iat": issued_at,
        "exp": int(claims.expires_at),
        "jti": claims.token_id,
    }


def claims_from_payload(payload: dict[str, Any]) -> AccessClaims:
    """The claims of a verified JWT payload.

    Raises
    ------
    TokenInvalidError
        A claim is missing or of the wrong type.
    """
    sub, name, role = payload.get("sub"), payload.get("name"), payload.get("role")
    epoch, exp, jti = payload.get("epoch"), payload.get("exp"), payload.get("jti")
    if not (isinstance(sub, str) and sub):
        raise TokenInvalidError("access token has no subject")
    if not isinstance(name, str) or not isinstance(role, str) or not isinstance(jti, str):
        raise TokenInvalidError("access token lacks name, role or jti")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise TokenInvalidError("access token has no valid key epoch")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise TokenInvalidError("access token has no valid expiry")
    return AccessClaims(
        client_id=sub,
        client_name=name,
        role=role,
        key_epoch=epoch,
        expires_at=float(exp),
        token_id=jti,
    )


def load_verification_key(public_key_pem: str) -> Ed25519PublicKey:
    """keyauth's Ed25519 public key from its PEM (``GET /v1/keys/verification-key``).

    Raises
    ------
    ValueError
        If ``public_key_pem`` is not an Ed25519 public key.
    """
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"not a PEM public key: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"verification key must be Ed25519, got {type(key).__name__}")
    return key


class TokenVerifier:
    """Checks an access token offline against keyauth's public verification key.

    Parameters
    ----------
    public_key_pem
        ``public_key_pem`` from ``GET /v1/keys/verification-key``.
    issuer, audience
        Expected ``iss`` and ``aud`` claims.
    leeway
        Seconds of clock skew tolerated on ``exp`` and ``iat``.
    cache_size
        How many verified tokens to remember (0: none), keyed by the token's SHA-256. A
        remembered token skips the signature check until ``exp`` (plus ``leeway``), when
        it is forgotten and checked afresh, so refused as expired; the role is checked on
        every call. The key is fixed for the verifier's life, so a remembered token is
        one its key verified.
    clock
        Seconds since the epoch, as PyJWT reads them (for the remembered tokens' expiry).

    Raises
    ------
    ValueError
        If ``public_key_pem`` is not an Ed25519 public key.
    """

    def __init__(
        self,
        public_key_pem: str,
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway: float = 5.0,
        cache_size: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = load_verification_key(public_key_pem)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        # The contract imports only the standard library, PyJWT and cryptography: a
        # least-recently-used dict of the verified tokens' claims, by SHA-256.
        self._cache_size = cache_size
        self._clock = clock
        self._verified: OrderedDict[bytes, AccessClaims] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str, *, role: str | Collection[str] = CLIENT_ROLE) -> AccessClaims:
        """The claims of a valid token held by ``role``.

        Parameters
        ----------
        token
            The bearer token as presented.
        role
            The role the request needs (``CLIENT_ROLE`` or ``ADMIN_ROLE``), or several
            roles, any of which will do (a path both clients and the administrator read).

        Raises
        ------
        TokenError
            ``TokenMissingError``, ``TokenInvalidError``, ``TokenExpiredError`` (401) or
            ``TokenWrongRoleError`` (403): a valid token of another role.
        ValueError
            ``role`` names no role of ``ROLES``: a caller's bug, never the token's.
        """
        roles = (role,) if isinstance(role, str) else tuple(role)
        if not roles or not set(roles) <= set(ROLES):
            raise ValueError(f"role must be one or more of {ROLES}, got {role!r}")
        claims = self._claims(token)
        if claims.role not in roles:
            wanted = " or ".join(repr(r) for r in roles)
            raise TokenWrongRoleError(
                f"access token has role {claims.role!r}, this requires {wanted}"
            )
        return claims

    def _claims(self, token: str) -> AccessClaims:
        """The claims of a token this verifier's key signed and that has not expired."""
        if not token:
            raise TokenMissingError("no access token was presented")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalidError("access token is too long")
        if self._cache_size <= 0:
            return self._decode(token)
        # the hash, not the token: the cache never holds a usable credential
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            claims = self._verified.get(key)
            if claims is not None:
                # PyJWT accepts a token while now < exp + leeway: remembered as long, no longer
                if self._clock() < claims.expires_at + self.leeway:
                    self._verified.move_to_end(key)
                    return claims
                del self._verified[key]
        claims = self._decode(token)
        with self._lock:
            self._verified[key] = claims
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return claims

    def _decode(self, token: str) -> AccessClaims:
        try:
            # Only EdDSA: never let the token's header pick the algorithm ("none", HS256).
            payload: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpiredError("access token has expired") from None
        except jwt.InvalidTokenError as exc:
            # PyJWT's messages name the failed check, never the token itself.
            raise TokenInvalidError(f"access token rejected: {exc}") from None
        if PURPOSE_CLAIM in payload:
            # keyauth signs other statements with the same key (a key epoch's key id): they
            # carry a purpose, access tokens never do, so none can pass for a token.
            raise TokenInvalidError("a signed key statement is not an access token")
        return claims_from_payload(payload)
