"""``InMemoryStore``: dictionaries behind a lock, the twin of ``SqliteStore`` for unit tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import replace

from keyauth.errors import ClientNameTakenError, ClientNotFoundError, StateError
from keyauth.store._base import KeyauthStore, check_token
from keyauth.store._records import (
    ClientRecord,
    EnrollmentTokenRecord,
    KeyEpoch,
    PendingEnrollment,
)

__all__ = ["InMemoryStore"]


class InMemoryStore(KeyauthStore):
    """Dictionaries behind a lock: the twin of ``SqliteStore`` for unit tests only."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._signing_key: bytes | None = None
        self._epochs: dict[int, KeyEpoch] = {}
        self._tokens: dict[str, EnrollmentTokenRecord] = {}
        self._clients: dict[str, ClientRecord] = {}
        self._sealed: dict[str, bytes] = {}

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def hold() -> Iterator[None]:
            with self._lock:
                yield

        return hold()

    def load_signing_key(self) -> bytes | None:
        return self._signing_key

    def save_signing_key(self, pem: bytes) -> None:
        with self._lock:
            if self._signing_key is not None:
                raise StateError("a signing key exists already")
            self._signing_key = pem

    def add_key_epoch(self, epoch: KeyEpoch) -> None:
        with self._lock:
            if epoch.epoch in self._epochs:
                raise StateError(f"key epoch {epoch.epoch} exists already")
            self._epochs[epoch.epoch] = epoch

    def get_key_epoch(self, epoch: int) -> KeyEpoch | None:
        return self._epochs.get(epoch)

    def latest_key_epoch(self) -> KeyEpoch | None:
        with self._lock:
            return self._epochs[max(self._epochs)] if self._epochs else None

    def add_enrollment_token(self, record: EnrollmentTokenRecord) -> None:
        with self._lock:
            if record.token_hash in self._tokens:
                raise StateError("enrollment token exists already")
            self._tokens[record.token_hash] = record

    def enroll_client(
        self,
        token_hash: str,
        *,
        client_id: str,
        secret_hash: str,
        now: float,
        sealed_secret: bytes | None = None,
    ) -> ClientRecord:
        with self._lock:
            token = check_token(self._tokens.get(token_hash), now)
            if self.active_client_named(token.client_name) is not None:
                raise ClientNameTakenError(
                    f"an active client is named {token.client_name!r}; revoke it first"
                )
            client = ClientRecord(
                client_id,
                token.client_name,
                secret_hash,
                enrolled_at=now,
                confirmed=sealed_secret is None,
            )
            self._clients[client_id] = client
            if sealed_secret is not None:
                self._sealed[client_id] = sealed_secret
            self._tokens[token_hash] = replace(token, used_at=now, used_by=client_id)
            return client

    def pending_enrollment(self, token_hash: str) -> PendingEnrollment | None:
        with self._lock:
            token = self._tokens.get(token_hash)
            if token is None or token.used_at is None or token.used_by is None:
                return None
            client = self._clients.get(token.used_by)
            sealed = self._sealed.get(token.used_by)
            if client is None or client.revoked or sealed is None:
                return None
            return PendingEnrollment(client, token.used_at, sealed)

    def confirm_enrollment(self, client_id: str) -> None:
        with self._lock:
            self._sealed.pop(client_id, None)
            client = self._clients.get(client_id)
            if client is not None:
                self._clients[client_id] = replace(client, confirmed=True)

    def get_client(self, client_id: str) -> ClientRecord | None:
        return self._clients.get(client_id)

    def active_client_named(self, client_name: str) -> ClientRecord | None:
        with self._lock:
            for client in self._clients.values():
                if client.client_name == client_name and not client.revoked:
                    return client
            return None

    def list_clients(self) -> list[ClientRecord]:
        with self._lock:
            return sorted(self._clients.values(), key=lambda c: (c.enrolled_at, c.client_id))

    def revoked_client_ids(self) -> list[str]:
        with self._lock:
            revoked = [(c.revoked_at, c.client_id) for c in self._clients.values() if c.revoked]
        return [client_id for _, client_id in sorted(revoked)]

    def revoke_client(self, client_id: str, *, now: float) -> ClientRecord:
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                raise ClientNotFoundError(f"no client with id {client_id!r}")
            if not client.revoked:
                client = replace(client, revoked_at=now, confirmed=True)
                self._clients[client_id] = client
            self._sealed.pop(client_id, None)
            return client
