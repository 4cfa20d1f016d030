"""``KeyauthStore``: the interface both stores implement, and the token check they share."""

from __future__ import annotations

import abc
import contextlib

from keyauth.errors import (
    EnrollmentTokenError,
    EnrollmentTokenExpiredError,
    EnrollmentTokenUsedError,
)
from keyauth.store._records import (
    ClientRecord,
    EnrollmentTokenRecord,
    KeyEpoch,
    PendingEnrollment,
)

__all__ = ["KeyauthStore", "check_token"]


class KeyauthStore(abc.ABC):
    """Everything keyauth remembers. Implementations are safe to share between threads."""

    @abc.abstractmethod
    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Hold off every other thread and process that shares this state (key generation)."""

    @abc.abstractmethod
    def load_signing_key(self) -> bytes | None:
        """The PEM of the token-signing key, or ``None`` before the first start."""

    @abc.abstractmethod
    def save_signing_key(self, pem: bytes) -> None:
        """Persist the token-signing key; it must not exist yet."""

    @abc.abstractmethod
    def add_key_epoch(self, epoch: KeyEpoch) -> None:
        """Persist a new key epoch; ``StateError`` if that epoch number exists."""

    @abc.abstractmethod
    def get_key_epoch(self, epoch: int) -> KeyEpoch | None: ...

    @abc.abstractmethod
    def latest_key_epoch(self) -> KeyEpoch | None: ...

    @abc.abstractmethod
    def add_enrollment_token(self, record: EnrollmentTokenRecord) -> None: ...

    @abc.abstractmethod
    def enroll_client(
        self,
        token_hash: str,
        *,
        client_id: str,
        secret_hash: str,
        now: float,
        sealed_secret: bytes | None = None,
    ) -> ClientRecord:
        """Redeem an enrollment token and create its client, both or neither.

        With ``sealed_secret`` the client starts unconfirmed and ``pending_enrollment``
        finds it by the token until ``confirm_enrollment`` or revocation.

        Raises
        ------
        EnrollmentTokenError, EnrollmentTokenExpiredError, EnrollmentTokenUsedError
            Unknown, expired or already used token; nothing changes.
        ClientNameTakenError
            An active client already has the token's name; the token stays unused.
        """

    @abc.abstractmethod
    def pending_enrollment(self, token_hash: str) -> PendingEnrollment | None:
        """The unconfirmed, unrevoked client a used token enrolled, with its sealed secret."""

    @abc.abstractmethod
    def confirm_enrollment(self, client_id: str) -> None:
        """Forget the client's sealed secret: its enrollment can no longer be re-delivered."""

    @abc.abstractmethod
    def get_client(self, client_id: str) -> ClientRecord | None: ...

    @abc.abstractmethod
    def active_client_named(self, client_name: str) -> ClientRecord | None: ...

    @abc.abstractmethod
    def list_clients(self) -> list[ClientRecord]:
        """Every client ever enrolled, oldest first."""

    @abc.abstractmethod
    def revoked_client_ids(self) -> list[str]:
        """The ids of every revoked client, oldest revocation first (ties by id)."""

    @abc.abstractmethod
    def revoke_client(self, client_id: str, *, now: float) -> ClientRecord:
        """Revoke a client (idempotent: the first revocation time stays); 404 if unknown.

        A revoked client's sealed secret is forgotten: its enrollment is never re-delivered.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release files and connections."""


def check_token(record: EnrollmentTokenRecord | None, now: float) -> EnrollmentTokenRecord:
    """``record`` if it can be redeemed at ``now``; the error that says why not otherwise."""
    if record is None:
        raise EnrollmentTokenError("enrollment token is not known")
    if record.used_at is not None:
        # Telling the holder it was used lets a hospital notice a stolen token.
        raise EnrollmentTokenUsedError("enrollment token was already used")
    if record.expires_at <= now:
        raise EnrollmentTokenExpiredError("enrollment token has expired")
    return record
