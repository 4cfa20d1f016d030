"""Signed access tokens (EdDSA JWTs) of clients and the administrator, signed by keyauth.

Pure: no web framework, no network. The claims and their verification are the wire
contract's (``hefl_wire.AccessClaims``, ``hefl_wire.TokenVerifier``), which fl_server and
fl_client use without importing keyauth. The same key signs keyauth's statements of each
key epoch's key id (``hefl_wire.KeyIdVerifier`` checks them).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hefl_wire import (
    ALGORITHM,
    AUDIENCE,
    CLIENT_ROLE,
    ISSUER,
    KEY_ID_TYPE,
    AccessClaims,
    KeyIdStatement,
    claims_to_payload,
    statement_to_payload,
)

__all__ = [
    "IssuedToken",
    "TokenSigner",
    "generate_signing_key",
    "public_key_to_pem",
    "signing_key_from_pem",
    "signing_key_to_pem",
]


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
    """Issues access tokens, and statements of key ids, signed with keyauth's Ed25519 key.

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
        self,
        *,
        client_id: str,
        client_name: str,
        key_epoch: int,
        role: str = CLIENT_ROLE,
        lifetime: int | None = None,
    ) -> IssuedToken:
        """A token for ``client_id``, valid ``lifetime`` seconds (the signer's by default)."""
        lifetime = self.lifetime if lifetime is None else lifetime
        if lifetime <= 0:
            raise ValueError(f"token lifetime must be positive, got {lifetime}")
        issued_at = int(self._clock())
        claims = AccessClaims(
            client_id=client_id,
            client_name=client_name,
            role=role,
            key_epoch=key_epoch,
            expires_at=float(issued_at + lifetime),
            token_id=uuid.uuid4().hex,
        )
        payload = claims_to_payload(
            claims, issued_at=issued_at, issuer=self.issuer, audience=self.audience
        )
        token = jwt.encode(payload, self._key, algorithm=ALGORITHM)
        return IssuedToken(token=token, claims=claims, lifetime=lifetime)

    def sign_statement(self, statement: KeyIdStatement) -> str:
        """``statement`` as an EdDSA JWT of type ``hefl_wire.KEY_ID_TYPE`` (never a token)."""
        payload = statement_to_payload(
            statement, issued_at=int(self._clock()), issuer=self.issuer, audience=self.audience
        )
        return jwt.encode(payload, self._key, algorithm=ALGORITHM, headers={"typ": KEY_ID_TYPE})
