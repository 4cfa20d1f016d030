"""Key authority state: clients, enrollment tokens, key epochs and the token-signing key.

``KeyauthStore`` is the interface; ``SqliteStore`` is the durable implementation (SQLite in
WAL mode with ``synchronous=FULL``, key files written atomically with mode 0600) and
``InMemoryStore`` its twin for unit tests. ``open_store`` picks one.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import crypto
from keyauth.errors import (
    ClientNameTakenError,
    ClientNotFoundError,
    EnrollmentTokenError,
    EnrollmentTokenExpiredError,
    EnrollmentTokenUsedError,
    StateError,
)

__all__ = [
    "ClientRecord",
    "EnrollmentTokenRecord",
    "InMemoryStore",
    "KeyEpoch",
    "KeyauthStore",
    "PendingEnrollment",
    "SqliteStore",
    "open_store",
]

logger = logging.getLogger("keyauth.store")

# 1: the first schema. 2: clients.pending_secret (enrollment re-delivery), added in place.
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_epochs (
    epoch INTEGER PRIMARY KEY CHECK (epoch >= 1),
    profile TEXT NOT NULL,
    created_at REAL NOT NULL,
    secret_sha256 TEXT NOT NULL,
    public_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    token_hash TEXT PRIMARY KEY,
    client_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    used_by TEXT
);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    client_name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    revoked_at REAL,
    pending_secret BLOB
);
-- One active client per name: a hospital is re-enrolled only after its old client is revoked.
CREATE UNIQUE INDEX IF NOT EXISTS clients_active_name
    ON clients (client_name) WHERE revoked_at IS NULL;
"""


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
    def revoke_client(self, client_id: str, *, now: float) -> ClientRecord:
        """Revoke a client (idempotent: the first revocation time stays); 404 if unknown.

        A revoked client's sealed secret is forgotten: its enrollment is never re-delivered.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release files and connections."""


def _check_token(record: EnrollmentTokenRecord | None, now: float) -> EnrollmentTokenRecord:
    if record is None:
        raise EnrollmentTokenError("enrollment token is not known")
    if record.used_at is not None:
        # Telling the holder it was used lets a hospital notice a stolen token.
        raise EnrollmentTokenUsedError("enrollment token was already used")
    if record.expires_at <= now:
        raise EnrollmentTokenExpiredError("enrollment token has expired")
    return record


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
            token = _check_token(self._tokens.get(token_hash), now)
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_dir(path: Path) -> None:
    if not path.exists():
        path.mkdir(mode=0o700, parents=True)
        _fsync_dir(path.parent)
    if not path.is_dir():
        raise StateError(f"{path} is not a directory")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        logger.warning("tightening permissions of %s to 0700", path)
        path.chmod(0o700)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole.

    Write a private temporary file, fsync it, rename it over ``path``, fsync the directory.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask: key files are for this user only
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_private(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("tightening permissions of %s from %o to 0600", path, mode)
        path.chmod(0o600)
    return path.read_bytes()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database of an earlier schema version up to date, in place.

    Checks the columns rather than trusting ``user_version``: each step is idempotent and
    runs in the caller's transaction, so a crash mid-way leaves the old schema whole.
    """
    columns = {row[1] for row in db.execute("PRAGMA table_info(clients)")}
    if "pending_secret" not in columns:
        # Clients enrolled before version 2 have no sealed secret: they count as confirmed.
        db.execute("ALTER TABLE clients ADD COLUMN pending_secret BLOB")
        logger.info("migrated keyauth.sqlite3: added clients.pending_secret")


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
        _make_private_dir(state_dir)
        self._keys_dir = state_dir / "keys"
        _make_private_dir(self._keys_dir)
        self._signing_key_path = state_dir / "signing-key.pem"
        self._lock = threading.RLock()
        self._epoch_cache: dict[int, KeyEpoch] = {}
        db_path = state_dir / "keyauth.sqlite3"
        # Create the database file private before SQLite does; -wal and -shm inherit its mode.
        os.close(os.open(db_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        try:
            self._configure()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StateError(f"cannot open {db_path}: {exc}") from exc
        self._lock_fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _configure(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"journal_mode is {mode}, WAL is required")
        # FULL: a commit is on disk before the response that acknowledges it is sent.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if not 0 <= version <= _SCHEMA_VERSION:
            # A newer keyauth wrote it: refuse rather than drop what we do not know.
            raise sqlite3.DatabaseError(f"schema version {version} is newer than {_SCHEMA_VERSION}")
        with self._transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            _migrate(db)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

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
            _write_atomic(self._signing_key_path, pem)
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
            _write_atomic(secret_path, epoch.material.secret_context)
            _write_atomic(public_path, epoch.material.public_context)
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
            token = _check_token(self._token(db, token_hash), now)
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


def open_store(state_dir: Path | None) -> KeyauthStore:
    """The durable store in ``state_dir``, or an in-memory one for ``None`` (tests only)."""
    return InMemoryStore() if state_dir is None else SqliteStore(state_dir)
