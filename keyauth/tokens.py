"""Signed client access tokens (EdDSA JWTs): keyauth signs them, its public key verifies them.

Pure: no web framework, no network. The aggregation server imports ``TokenVerifier`` to
check tokens itself with the PEM from ``GET /v1/keys/verification-key``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keyauth.errors import TokenError

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "ISSUER",
    "AccessClaims",
    "IssuedToken",
    "TokenError",
    "TokenSigner",
    "TokenVerifier",
    "generate_signing_key",
    "public_key_to_pem",
    "signing_key_from_pem",
    "signing_key_to_pem",
]

ALGORITHM = "EdDSA"
ISSUER = "hefl-keyauth"
AUDIENCE = "hefl"
# A real token is about 400 characters; anything far larger is not worth parsing.
MAX_TOKEN_CHARS = 4096
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says about its bearer."""

    client_id: str
    client_name: str
    role: str
    key_epoch: int
    expires_at: float
    token_id: str


@dataclass(frozen=True)
class IssuedToken:
    """A freshly signed access token and the claims it carries."""

    token: str
    claims: AccessClaims
    lifetime: int


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signing_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM of the private signing key (unencrypted: protect the file, mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def signing_key_from_pem(pem: bytes) -> Ed25519PrivateKey:
    """The private signing key from ``signing_key_to_pem`` output; ``ValueError`` otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM private key: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key must be Ed25519, got {type(key).__name__}")
    return key


def public_key_to_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of the verification key (what the server is given)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


class TokenSigner:
    """Issues access tokens signed with keyauth's Ed25519 key.

    Parameters
    ----------
    private_key
        The signing key; its public half goes to ``TokenVerifier``.
    lifetime
        Seconds a token stays valid. This is the bound on how long a revoked client can
        still use a token at a server that verifies offline.
    clock
        Seconds since the epoch; injectable for tests.
    """

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        lifetime: int = 300,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lifetime <= 0:
            raise ValueError(f"token lifetime must be positive, got {lifetime}")
        self._key = private_key
        self.lifetime = lifetime
        self.issuer = issuer
        self.audience = audience
        self._clock = clock

    @property
    def public_key_pem(self) -> str:
        return public_key_to_pem(self._key)

    def issue(
        self, *, client_id: str, client_name: str, key_epoch: int, role: str = "client"
    ) -> IssuedToken:
        issued_at = int(self._clock())
        claims = AccessClaims(
            client_id=client_id,
            client_name=client_name,
            role=role,
            key_epoch=key_epoch,
            expires_at=float(issued_at + self.lifetime),
            token_id=uuid.uuid4().hex,
        )
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": claims.client_id,
            "name": claims.client_name,
            "role": claims.role,
            "epoch": claims.key_epoch,
            "iat": issued_at,
            "exp": issued_at + self.lifetime,
            "jti": claims.token_id,
        }
        token = jwt.encode(payload, self._key, algorithm=ALGORITHM)
        return IssuedToken(token=token, claims=claims, lifetime=self.lifetime)


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
    ) -> None:
        try:
            key = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise ValueError(f"not a PEM public key: {type(exc).__name__}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"verification key must be Ed25519, got {type(key).__name__}")
        self._key = key
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def verify(self, token: str, *, role: str = "client") -> AccessClaims:
        """The claims of a valid token held by ``role``.

        Raises
        ------
        TokenError
            ``token_missing``, ``token_invalid``, ``token_expired`` (401) or
            ``token_wrong_role`` (403).
        """
        if not token:
            raise TokenError("no access token was presented", code="token_missing")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("access token is too long", code="token_invalid")
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
            raise TokenError("access token has expired", code="token_expired") from None
        except jwt.InvalidTokenError as exc:
            # PyJWT's messages name the failed check, never the token itself.
            raise TokenError(f"access token rejected: {exc}", code="token_invalid") from None
        claims = _claims_from_payload(payload)
        if claims.role != role:
            raise TokenError(
                f"access token has role {claims.role!r}, this requires {role!r}",
                code="token_wrong_role",
            )
        return claims


def _claims_from_payload(payload: dict[str, Any]) -> AccessClaims:
    sub, name, role = payload.get("sub"), payload.get("name"), payload.get("role")
    epoch, exp, jti = payload.get("epoch"), payload.get("exp"), payload.get("jti")
    if not (isinstance(sub, str) and sub):
        raise TokenError("access token has no subject", code="token_invalid")
    if not isinstance(name, str) or not isinstance(role, str) or not isinstance(jti, str):
        raise TokenError("access token lacks name, role or jti", code="token_invalid")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise TokenError("access token has no valid key epoch", code="token_invalid")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise TokenError("access token has no valid expiry", code="token_invalid")
    return AccessClaims(
        client_id=sub,
        client_name=name,
        role=role,
        key_epoch=epoch,
        expires_at=float(exp),
        token_id=jti,
    )
