"""The records keyauth keeps: clients, enrollment tokens, pending enrollments, key epochs."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import crypto
from hefl_wire import key_id_of

__all__ = ["ClientRecord", "EnrollmentTokenRecord", "KeyEpoch", "PendingEnrollment"]


@dataclass(frozen=True)
class ClientRecord:
    """An enrolled client. ``secret_hash`` is the SHA-256 of its secret, never the secret.

    ``confirmed`` is false until the client's first access token: until then its sealed
    secret is kept so that the enrollment answer can be delivered again.
    """

    client_id: str
    client_name: str
    secret_hash: str
    enrolled_at: float
    revoked_at: float | None = None
    confirmed: bool = True

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class EnrollmentTokenRecord:
    """An issued enrollment token, known by its hash only."""

    token_hash: str
    client_name: str
    created_at: float
    expires_at: float
    used_at: float | None = None
    used_by: str | None = None


@dataclass(frozen=True)
class PendingEnrollment:
    """An unconfirmed enrollment: the client a used token created and its sealed secret.

    ``sealed_secret`` is the client secret encrypted under a key only the enrollment token
    derives; the store cannot open it.
    """

    client: ClientRecord
    used_at: float
    sealed_secret: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyEpoch:
    """One key epoch: the CKKS key material generated for it and when."""

    epoch: int
    created_at: float
    material: crypto.KeyMaterial

    @property
    def profile_name(self) -> str:
        return self.material.profile_name

    @functools.cached_property
    def key_id(self) -> str:
        """The hex SHA-256 of the secret context as served (``hefl_wire.key_id_of``).

        Derived, not stored: ``SqliteStore`` checks the stored bytes against the hash it
        recorded for them, so the id of an epoch from before key ids is its bytes' too.
        """
        return key_id_of(self.material.secret_context)
