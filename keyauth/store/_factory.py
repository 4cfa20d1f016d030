"""``open_store``: the durable store for a state directory, the in-memory one for tests."""

from __future__ import annotations

from pathlib import Path

from keyauth.store._base import KeyauthStore
from keyauth.store._memory import InMemoryStore
from keyauth.store._sqlite import SqliteStore

__all__ = ["open_store"]


def open_store(state_dir: Path | None) -> KeyauthStore:
    """The durable store in ``state_dir``, or an in-memory one for ``None`` (tests only)."""
    return InMemoryStore() if state_dir is None else SqliteStore(state_dir)
