"""Key ids: what names a key epoch's keys, and keyauth's signed statement of it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import jwt

from hefl_wire._tokens import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    MAX_TOKEN_CHARS,
    PURPOSE_CLAIM,
    load_verification_key,
)

__all__ = [
    "KEY_ID_PURPOSE",
    "KEY_ID_TYPE",
    "KeyIdStatement",
    "KeyIdVerifier",
    "KeyStatementError",
    "key_id_of",
    "statement_from_payload",
    "statement_to_payload",
]

# The ``purpose`` claim and the JOSE ``typ`` header of a key-id statement. Access tokens
# carry no purpose, and ``TokenVerifier`` refuses any token that does: neither can pass for
# the other although keyauth signs both with one key.
KEY_ID_PURPOSE = "key-id"
KEY_ID_TYPE = "hefl-key-id+jwt"
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")
_REQUIRED_CLAIMS = ["iss", "aud", "iat", PURPOSE_CLAIM, "epoch", "profile", "key_id"]


def key_id_of(secret_context: bytes) -> str:
    """The key id of a key epoch: the hex SHA-256 of its secret context, byte for byte.

    keyauth computes it of the context it serves, a hospital of the context it holds.
    The keyless context is the same for every key of a profile, so only the secret
    context can tell two key generations apart.
    """
    return hashlib.sha256(secret_context).hexdigest()


class KeyStatementError(ValueError):
    """A key-id statement that is forged, malformed, of another purpose or another epoch."""


@dataclass(frozen=True)
class KeyIdStatement:
    """What keyauth states about one key epoch: its profile and its key id."""

    key_epoch: int
    profile: str
    key_id: str


def statement_to_payload(
    statement: KeyIdStatement, *, issued_at: int, issuer: str = ISSUER, audience: str = AUDIENCE
) -> dict[str, Any]:
    """The JWT payload of ``statement`` (what keyauth signs).

    It has no expiry: what it states stays true for as long as the key that signed it
    verifies tokens, and a statement of replaced keys is signed by a replaced key too.
    """
    return {
        "iss": issuer,
        "aud": audience,
        PURPOSE_CLAIM: KEY_ID_PURPOSE,
        "epoch": statement.key_epoch,
        "profile": statement.profile,
        "key_id": statement.key_id,
        "iat": issued_at,
    }


def statement_from_payload(payload: dict[str, Any]) -> KeyIdStatement:
    """The statement of a verified JWT payload.

    Raises
    ------
    KeyStatementError
        Of another purpose, or a claim missing or of the wrong form.
    """
    if payload.get(PURPOSE_CLAIM) != KEY_ID_PURPOSE:
        raise KeyStatementError(f"not a key-id statement (purpose {payload.get(PURPOSE_CLAIM)!r})")
    epoch, profile, key_id = payload.get("epoch"), payload.get("profile"), payload.get("key_id")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise KeyStatementError("key-id statement has no valid key epoch")
    if not (isinstance(profile, str) and profile):
        raise KeyStatementError("key-id statement has no profile")
    if not (isinstance(key_id, str) and _KEY_ID.match(key_id)):
        raise KeyStatementError("key-id statement has no key id of 64 hex digits")
    return KeyIdStatement(key_epoch=epoch, profile=profile, key_id=key_id)


class KeyIdVerifier:
    """Checks keyauth's key-id statements against its public verification key, offline.

    Parameters
    ----------
    public_key_pem
        ``public_key_pem`` from ``GET /v1/keys/verification-key``: the key that verifies
        access tokens verifies these statements too.
    issuer, audience
        Expected ``iss`` and ``aud`` claims.

    Raises
    ------
    ValueError
        If ``public_key_pem`` is not an Ed25519 public key.
    """

    def __init__(
        self, public_key_pem: str, *, issuer: str = ISSUER, audience: str = AUDIENCE
    ) -> None:
        self._key = load_verification_key(public_key_pem)
        self.issuer = issuer
        self.audience = audience

    def verify(self, statement: str, *, key_epoch: int | None = None) -> KeyIdStatement:
        """What a valid statement says, if it is about ``key_epoch`` (any epoch for ``None``).

        Raises
        ------
        KeyStatementError
            Forged or signed by another key, malformed, of another purpose (an access
            token), or about another key epoch.
        """
        if not statement or len(statement) > MAX_TOKEN_CHARS:
            raise KeyStatementError("key-id statement is empty or too long")
        try:
            header = jwt.get_unverified_header(statement)
            # Only EdDSA: never let the statement's header pick the algorithm.
            payload: dict[str, Any] = jwt.decode(
                statement,
                self._key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.InvalidTokenError as exc:
            raise KeyStatementError(f"key-id statement rejected: {exc}") from None
        # The header is signed too; its typ names the purpose for anyone reading the JWT.
        if header.get("typ") != KEY_ID_TYPE:
            raise KeyStatementError(f"not a key-id statement (typ {header.get('typ')!r})")
        stated = statement_from_payload(payload)
        if key_epoch is not None and stated.key_epoch != key_epoch:
            raise KeyStatementError(
                f"key-id statement is about key epoch {stated.key_epoch}, not {key_epoch}"
            )
        return stated
