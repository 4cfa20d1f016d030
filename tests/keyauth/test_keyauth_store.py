"""The state interface, run against both implementations, and what only SQLite promises."""

from __future__ import annotations

import contextlib
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import crypto
from keyauth.errors import (
    ClientNameTakenError,
    ClientNotFoundError,
    EnrollmentTokenError,
    EnrollmentTokenExpiredError,
    EnrollmentTokenUsedError,
    StateError,
)
from keyauth.store import (
    ClientRecord,
    EnrollmentTokenRecord,
    InMemoryStore,
    KeyauthStore,
    KeyEpoch,
    PendingEnrollment,
    SqliteStore,
    open_store,
)

NOW = 1_900_000_000.0


def _epoch(number: int) -> KeyEpoch:
    material = crypto.generate_key_material(crypto.get_profile("test-n2048"))
    return KeyEpoch(epoch=number, created_at=NOW, material=material)


def _token(token_hash: str = "h-1", name: str = "hospital-a", ttl: float = 60) -> Any:
    return EnrollmentTokenRecord(token_hash, name, created_at=NOW, expires_at=NOW + ttl)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyauthStore]:
    opened = open_store(None if request.param == "memory" else tmp_path / "state")
    yield opened
    opened.close()


def test_the_package_exports_every_name_it_did_as_a_module() -> None:
    import keyauth.store

    assert keyauth.store.__all__ == [
        "ClientRecord",
        "EnrollmentTokenRecord",
        "InMemoryStore",
        "KeyEpoch",
        "KeyauthStore",
        "PendingEnrollment",
        "SqliteStore",
        "open_store",
    ]
    for name in keyauth.store.__all__:
        assert hasattr(keyauth.store, name), name


def test_open_store_picks_the_implementation(tmp_path: Path) -> None:
    memory = open_store(None)
    durable = open_store(tmp_path / "state")
    try:
        assert isinstance(memory, InMemoryStore)
        assert isinstance(durable, SqliteStore)
    finally:
        durable.close()


def test_signing_key_is_saved_once(store: KeyauthStore) -> None:
    assert store.load_signing_key() is None

    store.save_signing_key(b"pem-1")

    assert store.load_signing_key() == b"pem-1"
    with pytest.raises(StateError):
        store.save_signing_key(b"pem-2")
    assert store.load_signing_key() == b"pem-1"


def test_key_epochs_are_added_and_found(store: KeyauthStore) -> None:
    first, second = _epoch(1), _epoch(2)
    assert store.latest_key_epoch() is None

    store.add_key_epoch(first)
    store.add_key_epoch(second)

    assert store.latest_key_epoch() == second
    assert store.get_key_epoch(1) == first
    assert store.get_key_epoch(3) is None


def test_an_existing_key_epoch_is_never_replaced(store: KeyauthStore) -> None:
    original = _epoch(1)
    store.add_key_epoch(original)

    with pytest.raises(StateError, match="exists"):
        store.add_key_epoch(_epoch(1))

    assert store.get_key_epoch(1) == original


def test_enrollment_redeems_the_token_and_creates_the_client(store: KeyauthStore) -> None:
    store.add_enrollment_token(_token())

    client = store.enroll_client("h-1", client_id="c-1", secret_hash="s-1", now=NOW + 1)

    assert client == ClientRecord("c-1", "hospital-a", "s-1", enrolled_at=NOW + 1)
    assert store.get_client("c-1") == client
    assert store.list_clients() == [client]


def test_a_sealed_secret_waits_for_confirmation(store: KeyauthStore) -> None:
    # Prepare
    store.add_enrollment_token(_token())

    # Execute
    client = store.enroll_client(
        "h-1", client_id="c-1", secret_hash="s-1", now=NOW + 1, sealed_secret=b"sealed"
    )

    # Assert
    assert not client.confirmed
    assert store.get_client("c-1") == client
    assert store.pending_enrollment("h-1") == PendingEnrollment(client, NOW + 1, b"sealed")
    assert "sealed" not in repr(store.pending_enrollment("h-1"))


def test_confirmation_forgets_the_sealed_secret(store: KeyauthStore) -> None:
    store.add_enrollment_token(_token())
    store.enroll_client("h-1", client_id="c-1", secret_hash="s", now=NOW, sealed_secret=b"x")

    store.confirm_enrollment("c-1")
    store.confirm_enrollment("c-1")  # idempotent

    assert store.pending_enrollment("h-1") is None
    client = store.get_client("c-1")
    assert client is not None
    assert client.confirmed


def test_revocation_forgets_the_sealed_secret(store: KeyauthStore) -> None:
    store.add_enrollment_token(_token())
    store.enroll_client("h-1", client_id="c-1", secret_hash="s", now=NOW, sealed_secret=b"x")

    revoked = store.revoke_client("c-1", now=NOW + 5)

    assert revoked.revoked
    assert store.pending_enrollment("h-1") is None


def test_only_a_used_token_has_a_pending_enrollment(store: KeyauthStore) -> None:
    store.add_enrollment_token(_token("h-1"))
    store.add_enrollment_token(_token("h-2", name="hospital-b"))
    store.enroll_client("h-2", client_id="c-2", secret_hash="s", now=NOW)  # nothing sealed

    assert store.pending_enrollment("h-nope") is None
    assert store.pending_enrollment("h-1") is None
    assert store.pending_enrollment("h-2") is None


@pytest.mark.parametrize(
    ("prepare", "error"),
    [
        ("unknown", EnrollmentTokenError),
        ("expired", EnrollmentTokenExpiredError),
        ("used", EnrollmentTokenUsedError),
    ],
)
def test_bad_enrollment_token_creates_nothing(
    store: KeyauthStore, prepare: str, error: type[Exception]
) -> None:
    # Prepare
    store.add_enrollment_token(_token("h-used"))
    first = store.enroll_client("h-used", client_id="c-0", secret_hash="s", now=NOW)
    store.add_enrollment_token(_token("h-expired", name="hospital-b", ttl=10))
    token_hash = {"unknown": "h-nope", "expired": "h-expired", "used": "h-used"}[prepare]

    # Execute
    with pytest.raises(error) as caught:
        store.enroll_client(token_hash, client_id="c-1", secret_hash="s", now=NOW + 10)

    # Assert
    assert type(caught.value) is error
    assert store.list_clients() == [first]
    assert store.get_client("c-1") is None


def test_token_expires_exactly_at_its_expiry(store: KeyauthStore) -> None:
    store.add_enrollment_token(_token(ttl=10))

    with pytest.raises(EnrollmentTokenExpiredError):
        store.enroll_client("h-1", client_id="c-1", secret_hash="s", now=NOW + 10)
    client = store.enroll_client("h-1", client_id="c-1", secret_hash="s", now=NOW + 9.999)

    assert client.client_id == "c-1"


def test_name_of_an_active_client_is_taken_and_the_token_survives(store: KeyauthStore) -> None:
    store.add_enrollment_token(_token("h-1"))
    store.add_enrollment_token(_token("h-2"))
    store.enroll_client("h-1", client_id="c-1", secret_hash="s", now=NOW)

    with pytest.raises(ClientNameTakenError):
        store.enroll_client("h-2", client_id="c-2", secret_hash="s", now=NOW)
    assert store.active_client_named("hospital-a") == store.get_client("c-1")

    store.revoke_client("c-1", now=NOW + 1)
    replacement = store.enroll_client("h-2", client_id="c-2", secret_hash="s", now=NOW + 2)

    assert replacement.client_name == "hospital-a"
    assert store.active_client_named("hospital-a") == replacement


def test_revocation_is_idempotent_and_keeps_the_first_time(store: KeyauthStore) -> None:
    store.add_enrollment_token(_token())
    store.enroll_client("h-1", client_id="c-1", secret_hash="s", now=NOW)

    first = store.revoke_client("c-1", now=NOW + 5)
    again = store.revoke_client("c-1", now=NOW + 9)

    assert first.revoked
    assert first.revoked_at == NOW + 5
    assert again == first
    assert store.get_client("c-1") == first
    assert store.active_client_named("hospital-a") is None


def test_revoking_an_unknown_client_is_not_found(store: KeyauthStore) -> None:
    with pytest.raises(ClientNotFoundError):
        store.revoke_client("nobody", now=NOW)


def test_clients_are_listed_oldest_first(store: KeyauthStore) -> None:
    for i, name in enumerate(["b", "a", "c"]):
        store.add_enrollment_token(_token(f"h-{name}", name=name))
        store.enroll_client(f"h-{name}", client_id=f"c-{name}", secret_hash="s", now=NOW + i)

    assert [c.client_name for c in store.list_clients()] == ["b", "a", "c"]


def test_duplicate_enrollment_token_hash_is_refused(store: KeyauthStore) -> None:
    store.add_enrollment_token(_token())

    with pytest.raises(StateError):
        store.add_enrollment_token(_token(name="hospital-z"))


# What only the durable store promises


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_everything_survives_a_reopen(state_dir: Path) -> None:
    # Prepare
    first = SqliteStore(state_dir)
    first.save_signing_key(b"pem")
    epoch = _epoch(1)
    first.add_key_epoch(epoch)
    first.add_enrollment_token(_token("h-1"))
    first.add_enrollment_token(_token("h-2", name="hospital-b"))
    client = first.enroll_client("h-1", client_id="c-1", secret_hash="s", now=NOW)
    first.close()

    # Execute
    second = SqliteStore(state_dir)

    # Assert
    try:
        assert second.load_signing_key() == b"pem"
        assert second.latest_key_epoch() == epoch
        assert second.list_clients() == [client]
        with pytest.raises(EnrollmentTokenUsedError):
            second.enroll_client("h-1", client_id="c-9", secret_hash="s", now=NOW)
        assert second.enroll_client("h-2", client_id="c-2", secret_hash="s", now=NOW).client_id
    finally:
        second.close()


# The schema keyauth created before enrollment re-delivery (user_version 1), verbatim.
_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE key_epochs (
    epoch INTEGER PRIMARY KEY CHECK (epoch >= 1),
    profile TEXT NOT NULL,
    created_at REAL NOT NULL,
    secret_sha256 TEXT NOT NULL,
    public_sha256 TEXT NOT NULL
);
CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY,
    client_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    used_by TEXT
);
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    client_name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    revoked_at REAL
);
CREATE UNIQUE INDEX clients_active_name ON clients (client_name) WHERE revoked_at IS NULL;
INSERT INTO enrollment_tokens VALUES ('h-old', 'hospital-a', 1.0, 2.0, 1.5, 'c-old');
INSERT INTO clients VALUES ('c-old', 'hospital-a', 's-old', 1.5, NULL);
INSERT INTO enrollment_tokens VALUES ('h-new', 'hospital-b', 1.0, 9e99, NULL, NULL);
PRAGMA user_version = 1;
"""


def _columns(state_dir: Path, table: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(state_dir / "keyauth.sqlite3")) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def test_a_version_1_database_is_migrated_in_place(state_dir: Path) -> None:
    # Prepare: a state directory as the previous keyauth left it.
    state_dir.mkdir(mode=0o700)
    with contextlib.closing(sqlite3.connect(state_dir / "keyauth.sqlite3")) as db:
        db.executescript(_SCHEMA_V1)

    # Execute: open it twice (the migration runs once, then finds nothing to do).
    SqliteStore(state_dir).close()
    store = SqliteStore(state_dir)

    # Assert: old clients kept and confirmed (nothing sealed), new enrollments sealed.
    try:
        assert store.list_clients() == [ClientRecord("c-old", "hospital-a", "s-old", 1.5)]
        assert store.pending_enrollment("h-old") is None
        with pytest.raises(EnrollmentTokenUsedError):
            store.enroll_client("h-old", client_id="c-9", secret_hash="s", now=NOW)
        new = store.enroll_client(
            "h-new", client_id="c-new", secret_hash="s", now=NOW, sealed_secret=b"sealed"
        )
        assert store.pending_enrollment("h-new") == PendingEnrollment(new, NOW, b"sealed")
        assert store._query("PRAGMA user_version") == [(2,)]
    finally:
        store.close()
    assert _columns(state_dir, "clients")[-1] == "pending_secret"


def test_a_database_from_a_newer_keyauth_is_refused(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    with contextlib.closing(sqlite3.connect(state_dir / "keyauth.sqlite3")) as db:
        db.execute("PRAGMA user_version = 3")

    with pytest.raises(StateError, match="newer"):
        SqliteStore(state_dir)


def test_state_is_private_to_its_user(state_dir: Path) -> None:
    store = SqliteStore(state_dir)
    store.save_signing_key(b"pem")
    store.add_key_epoch(_epoch(1))
    store.close()

    files = [p for p in state_dir.rglob("*") if p.is_file()]
    assert _mode(state_dir) == 0o700
    assert _mode(state_dir / "keys") == 0o700
    assert {p.name for p in files} >= {
        "keyauth.sqlite3",
        "signing-key.pem",
        "epoch-000001.secret-context",
        "epoch-000001.public-context",
    }
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert not [p for p in files if p.name.endswith(".tmp")]


def test_database_runs_in_wal_mode_with_full_sync(state_dir: Path) -> None:
    store = SqliteStore(state_dir)
    try:
        db = store._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


def test_a_state_directory_others_can_read_is_tightened(state_dir: Path) -> None:
    SqliteStore(state_dir).close()
    state_dir.chmod(0o755)
    (state_dir / "keys").chmod(0o750)

    SqliteStore(state_dir).close()

    assert _mode(state_dir) == 0o700
    assert _mode(state_dir / "keys") == 0o700


@pytest.mark.parametrize(
    ("name", "load"),
    [
        ("signing-key.pem", "load_signing_key"),
        ("keys/epoch-000001.secret-context", "latest_key_epoch"),
    ],
)
def test_a_key_file_others_can_read_is_refused_not_served(
    state_dir: Path, name: str, load: str
) -> None:
    # Prepare: a key file someone loosened (it may already have been read).
    store = SqliteStore(state_dir)
    store.save_signing_key(b"pem")
    store.add_key_epoch(_epoch(1))
    store.close()
    (state_dir / name).chmod(0o644)

    # Execute
    reopened = SqliteStore(state_dir)
    try:
        with pytest.raises(StateError, match=r"accessible to other users.*chmod 600"):
            getattr(reopened, load)()
    finally:
        reopened.close()

    # Assert: left as found, for the operator to judge.
    assert _mode(state_dir / name) == 0o644


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o1777])
def test_a_state_directory_others_can_write_in_is_refused(state_dir: Path, mode: int) -> None:
    state_dir.mkdir()
    state_dir.chmod(mode)

    with pytest.raises(StateError, match="writable by other users"):
        SqliteStore(state_dir)

    assert not (state_dir / "keyauth.sqlite3").exists()


def test_a_state_directory_of_another_user_is_refused(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir.mkdir(mode=0o700)
    monkeypatch.setattr("os.geteuid", lambda: state_dir.stat().st_uid + 1)

    with pytest.raises(StateError, match="belongs to another user"):
        SqliteStore(state_dir)


def test_a_loose_database_file_is_tightened(state_dir: Path) -> None:
    SqliteStore(state_dir).close()
    (state_dir / "keyauth.sqlite3").chmod(0o644)

    SqliteStore(state_dir).close()

    assert _mode(state_dir / "keyauth.sqlite3") == 0o600


@pytest.mark.parametrize("damage", ["tamper", "delete"])
def test_damaged_key_file_is_refused_not_served(state_dir: Path, damage: str) -> None:
    store = SqliteStore(state_dir)
    store.add_key_epoch(_epoch(1))
    store.close()
    secret = state_dir / "keys" / "epoch-000001.secret-context"
    if damage == "tamper":
        secret.write_bytes(secret.read_bytes()[:-1] + b"\x00")
    else:
        secret.unlink()

    reopened = SqliteStore(state_dir)
    try:
        with pytest.raises(StateError, match="epoch 1"):
            reopened.get_key_epoch(1)
    finally:
        reopened.close()


def test_missing_signing_key_is_refused_once_recorded(state_dir: Path) -> None:
    store = SqliteStore(state_dir)
    store.save_signing_key(b"pem")
    store.close()
    (state_dir / "signing-key.pem").unlink()

    reopened = SqliteStore(state_dir)
    try:
        with pytest.raises(StateError, match="missing"):
            reopened.load_signing_key()
    finally:
        reopened.close()


def test_unreferenced_key_files_from_a_crash_are_overwritten(state_dir: Path) -> None:
    # A crash after writing the files but before the row leaves files nothing refers to.
    store = SqliteStore(state_dir)
    (state_dir / "keys" / "epoch-000001.secret-context").write_bytes(b"stale")
    epoch = _epoch(1)

    store.add_key_epoch(epoch)

    try:
        assert store.get_key_epoch(1) == epoch
    finally:
        store.close()


def test_unusable_database_is_a_state_error(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    (state_dir / "keyauth.sqlite3").write_bytes(b"this is not a database" * 100)

    with pytest.raises(StateError, match="cannot open"):
        SqliteStore(state_dir)


class _FailingUpdate:
    """A connection stand-in that fails the token update inside enrollment."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("UPDATE enrollment_tokens"):
            raise OSError("disk failed mid-transaction")
        return self._db.execute(sql, *args)


def test_enrollment_is_one_transaction(state_dir: Path) -> None:
    # Prepare: the client row is inserted, then the token update fails.
    store = SqliteStore(state_dir)
    store.add_enrollment_token(_token())
    real_db = store._db
    store._db = _FailingUpdate(real_db)  # type: ignore[assignment]

    # Execute
    with pytest.raises(OSError, match="mid-transaction"):
        store.enroll_client("h-1", client_id="c-1", secret_hash="s", now=NOW)
    store._db = real_db

    # Assert: no half-enrolled client, and the token still works.
    try:
        assert store.list_clients() == []
        assert store.enroll_client("h-1", client_id="c-2", secret_hash="s", now=NOW).client_id
    finally:
        store.close()


def test_concurrent_redemptions_of_one_token_create_one_client(state_dir: Path) -> None:
    # Separate stores are separate SQLite connections, as separate processes would have.
    setup = SqliteStore(state_dir)
    setup.add_enrollment_token(_token())
    stores = [SqliteStore(state_dir) for _ in range(8)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(stores))

    def redeem(i: int) -> None:
        barrier.wait()
        try:
            stores[i].enroll_client("h-1", client_id=f"c-{i}", secret_hash="s", now=NOW)
            outcomes.append("enrolled")
        except EnrollmentTokenUsedError:
            outcomes.append("used")

    threads = [threading.Thread(target=redeem, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    try:
        assert sorted(outcomes) == ["enrolled"] + ["used"] * (len(stores) - 1)
        assert len(setup.list_clients()) == 1
    finally:
        for opened in [setup, *stores]:
            opened.close()
