"""Key authority state: clients, enrollment tokens, key epochs and the token-signing key.

``KeyauthStore`` is the interface; ``SqliteStore`` is the durable implementation (SQLite in
WAL mode with ``synchronous=FULL``, key files written atomically with mode 0600 through
``hefl_durable``) and ``InMemoryStore`` its twin for unit tests. ``open_store`` picks one.
"""

from keyauth.store._base import KeyauthStore
from keyauth.store._factory import open_store
from keyauth.store._memory import InMemoryStore
from keyauth.store._records import (
    ClientRecord,
    EnrollmentTokenRecord,
    KeyEpoch,
    PendingEnrollment,
)
from keyauth.store._sqlite import SqliteStore

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
