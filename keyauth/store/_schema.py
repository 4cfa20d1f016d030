"""The SQLite schema of ``keyauth.sqlite3`` and the migration of older versions in place."""

from __future__ import annotations

import logging
import sqlite3

__all__ = ["SCHEMA", "SCHEMA_VERSION", "migrate"]

logger = logging.getLogger("keyauth.store")

# 1: the first schema. 2: clients.pending_secret (enrollment re-delivery), added in place.
SCHEMA_VERSION = 2
SCHEMA = """
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


def migrate(db: sqlite3.Connection) -> None:
    """Bring a database of an earlier schema version up to date, in place.

    Checks the columns rather than trusting ``user_version``: each step is idempotent and
    runs in the caller's transaction, so a crash mid-way leaves the old schema whole.
    """
    columns = {row[1] for row in db.execute("PRAGMA table_info(clients)")}
    if "pending_secret" not in columns:
        # Clients enrolled before version 2 have no sealed secret: they count as confirmed.
        db.execute("ALTER TABLE clients ADD COLUMN pending_secret BLOB")
        logger.info("migrated keyauth.sqlite3: added clients.pending_secret")
