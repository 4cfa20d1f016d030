"""``SqliteStore``: keyauth's durable state, SQLite in WAL mode and private key files."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crypto
import hefl_durable
from keyauth.errors import ClientNameTakenError, ClientNotFoundError, StateError
from keyauth.store._base import KeyauthStore, check_token
from keyauth.store._records import (
    ClientRecord,
    EnrollmentTokenRecord,
    KeyEpoch,
    PendingEnrollment,
)
from keyauth.store._schema import SCHEMA, SCHEMA_VERSION, migrate

__all__ = ["SqliteStore"]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_private(path: Path) -> bytes:
    try:
        return hefl_durable.read_private(path)
    except hefl_durable.UnsafePathError as exc:
        raise StateError(str(exc)) from exc


# ``confirmed`` is computed: only ``pending_enrollment`` reads the sealed secret itself.
_SELECT_CLIENT = (
    "SELECT client_id, client_name, secret_hash, enrolled_at, revoked_at, "
    "pending_secret IS NULL FROM clients"
)


def _client_from_row(row: Any) -> ClientRecord:
    client_id, name, secret_hash, enrolled_at, revoked_at, confirmed = row
    return ClientRecord(client_id, name, secret_hash, enrolled_at, revoked_at, bool(confirmed))


class SqliteStore(KeyauthStore):
    """State in ``state_dir``: ``keyauth.sqlite3``, ``signing-key.pem`` and ``keys/``.

    Each row that points at a key file records the file's SHA-256 and is written after the
    file, so a crash between the two leaves an unreferenced file that is overwritten next
    time, and a damaged or swapped file is refused instead of served.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._keys_dir = state_dir / "keys"
        try:
            hefl_durable.make_private_dir(state_dir)
            hefl_durable.make_private_dir(self._keys_dir)
        except hefl_durable.UnsafePathError as exc:
            raise StateError(str(exc)) from exc
        self._signing_key_path = state_dir / "signing-key.pem"
        self._lock = threading.RLock()
        self._epoch_cache: dict[int, KeyEpoch] = {}
        db_path = state_dir / "keyauth.sqlite3"
        # Create the database file private before SQLite does; -wal and -shm inherit its mode.
        os.close(hefl_durable.open_private(db_path, os.O_RDWR))
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        try:
            self._configure()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StateError(f"cannot open {db_path}: {exc}") from exc
        self._lock_fd = hefl_durable.open_private(state_dir / ".lock", os.O_RDWR)

    def _configure(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"journal_mode is {mode}, WAL is required")
        # FULL: a commit is on disk before the response that acknowledges it is sent.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if not 0 <= version <= SCHEMA_VERSION:
            # A newer keyauth wrote it: refuse rather than drop what we do not know.
            raise sqlite3.DatabaseError(f"schema version {version} is newer than {SCHEMA_VERSION}")
        with self._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            migrate(db)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            # IMMEDIATE takes the write lock up front: two enrollments never interleave.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return self._hold()

    def _meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def load_signing_key(self) -> bytes | None:
        recorded = self._meta("signing_key_sha256")
        if not self._signing_key_path.exists():
            if recorded is not None:
                raise StateError(f"{self._signing_key_path} is missing")
            return None
        pem = _read_private(self._signing_key_path)
        if recorded is not None and _sha256(pem) != recorded:
            raise StateError(f"{self._signing_key_path} does not match its recorded hash")
        return pem

    def save_signing_key(self, pem: bytes) -> None:
        with self._transaction() as db:
            if self._meta("signing_key_sha256") is not None:
                raise StateError("a signing key exists already")
            hefl_durable.write_atomic(self._signing_key_path, pem)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('signing_key_sha256', ?)", (_sha256(pem),)
            )

    def _key_paths(self, epoch: int) -> tuple[Path, Path]:
        stem = self._keys_dir / f"epoch-{epoch:06d}"
        return stem.with_suffix(".secret-context"), stem.with_suffix(".public-context")

    def add_key_epoch(self, epoch: KeyEpoch) -> None:
        secret_path, public_path = self._key_paths(epoch.epoch)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM key_epochs WHERE epoch = ?", (epoch.epoch,)).fetchone():
                raise StateError(f"key epoch {epoch.epoch} exists already")
            hefl_durable.write_atomic(secret_path, epoch.material.secret_context)
            hefl_durable.write_atomic(public_path, epoch.material.public_context)
            db.execute(
                "INSERT INTO key_epochs (epoch, profile, created_at, secret_sha256, public_sha256)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    epoch.epoch,
                    epoch.profile_name,
                    epoch.created_at,
                    _sha256(epoch.material.secret_context),
                    _sha256(epoch.material.public_context),
                ),
            )
        self._epoch_cache[epoch.epoch] = epoch

    def _load_epoch(self, row: Any) -> KeyEpoch:
        number, profile, created_at, secret_sha, public_sha = row
        cached = self._epoch_cache.get(number)
        if cached is not None:
            return cached
        secret_path, public_path = self._key_paths(number)
        try:
            secret = _read_private(secret_path)
            public = _read_private(public_path)
        except FileNotFoundError as exc:
            raise StateError(f"key file of epoch {number} is missing: {exc.filename}") from None
        if _sha256(secret) != secret_sha or _sha256(public) != public_sha:
            raise StateError(f"key files of epoch {number} do not match their recorded hashes")
        loaded = KeyEpoch(
            epoch=number,
            created_at=float(created_at),
            material=crypto.KeyMaterial(
                profile_name=str(profile), secret_context=secret, public_context=public
            ),
        )
        self._epoch_cache[number] = loaded
        return loaded

    def get_key_epoch(self, epoch: int) -> KeyEpoch | None:
        rows = self._query(
            "SELECT epoch, profile, created_at, secret_sha256, public_sha256 "
            "FROM key_epochs WHERE epoch = ?",
            (epoch,),
        )
        return self._load_epoch(rows[0]) if rows else None

    def latest_key_epoch(self) -> KeyEpoch | None:
        rows = self._query(
            "SELECT epoch, profile, created_at, secret_sha256, public_sha256 "
            "FROM key_epochs ORDER BY epoch DESC LIMIT 1"
        )
        return self._load_epoch(rows[0]) if rows else None

    def add_enrollment_token(self, record: EnrollmentTokenRecord) -> None:
        with self._transaction() as db:
            try:
                db.execute(
                    "INSERT INTO enrollment_tokens (token_hash, client_name, created_at, "
                    "expires_at) VALUES (?, ?, ?, ?)",
                    (record.token_hash, record.client_name, record.created_at, record.expires_at),
                )
            except sqlite3.IntegrityError:
                raise StateError("enrollment token exists already") from None

    def _token(self, db: sqlite3.Connection, token_hash: str) -> EnrollmentTokenRecord | None:
        row = db.execute(
            "SELECT client_name, created_at, expires_at, used_at, used_by "
            "FROM enrollment_tokens WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()
        if row is None:
            return None
        return EnrollmentTokenRecord(token_hash, *row)

    def enroll_client(
        self,
        token_hash: str,
        *,
        client_id: str,
        secret_hash: str,
        now: float,
        sealed_secret: bytes | None = None,
    ) -> ClientRecord:
        with self._transaction() as db:
            token = check_token(self._token(db, token_hash), now)
            if db.execute(
                "SELECT 1 FROM clients WHERE client_name = ? AND revoked_at IS NULL",
                (token.client_name,),
            ).fetchone():
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
            db.execute(
                "INSERT INTO clients (client_id, client_name, secret_hash, enrolled_at, "
                "pending_secret) VALUES (?, ?, ?, ?, ?)",
                (client.client_id, client.client_name, client.secret_hash, now, sealed_secret),
            )
            db.execute(
                "UPDATE enrollment_tokens SET used_at = ?, used_by = ? WHERE token_hash = ?",
                (now, client_id, token_hash),
            )
        return client

    def pending_enrollment(self, token_hash: str) -> PendingEnrollment | None:
        rows = self._query(
            "SELECT c.client_id, c.client_name, c.secret_hash, c.enrolled_at, c.revoked_at, "
            "c.pending_secret IS NULL, t.used_at, c.pending_secret "
            "FROM enrollment_tokens AS t JOIN clients AS c ON c.client_id = t.used_by "
            "WHERE t.token_hash = ? AND t.used_at IS NOT NULL "
            "AND c.revoked_at IS NULL AND c.pending_secret IS NOT NULL",
            (token_hash,),
        )
        if not rows:
            return None
        *client, used_at, sealed = rows[0]
        return PendingEnrollment(_client_from_row(client), float(used_at), bytes(sealed))

    def confirm_enrollment(self, client_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE clients SET pending_secret = NULL "
                "WHERE client_id = ? AND pending_secret IS NOT NULL",
                (client_id,),
            )

    def get_client(self, client_id: str) -> ClientRecord | None:
        rows = self._query(
            _SELECT_CLIENT + " WHERE client_id = ?",
            (client_id,),
        )
        return _client_from_row(rows[0]) if rows else None

    def active_client_named(self, client_name: str) -> ClientRecord | None:
        rows = self._query(
            _SELECT_CLIENT + " WHERE client_name = ? AND revoked_at IS NULL",
            (client_name,),
        )
        return _client_from_row(rows[0]) if rows else None

    def list_clients(self) -> list[ClientRecord]:
        rows = self._query(_SELECT_CLIENT + " ORDER BY enrolled_at, client_id")
        return [_client_from_row(row) for row in rows]

    def revoked_client_ids(self) -> list[str]:
        rows = self._query(
            "SELECT client_id FROM clients WHERE revoked_at IS NOT NULL "
            "ORDER BY revoked_at, client_id"
        )
        return [str(row[0]) for row in rows]

    def revoke_client(self, client_id: str, *, now: float) -> ClientRecord:
        with self._transaction() as db:
            db.execute(
                "UPDATE clients SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",
                (now, client_id),
            )
            # A revoked client's enrollment is never re-delivered.
            db.execute("UPDATE clients SET pending_secret = NULL WHERE client_id = ?", (client_id,))
            row = db.execute(
                _SELECT_CLIENT + " WHERE client_id = ?",
                (client_id,),
            ).fetchone()
        if row is None:
            raise ClientNotFoundError(f"no client with id {client_id!r}")
        return _client_from_row(row)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            os.close(self._lock_fd)
