"""Key ids: the hex SHA-256 that names a key epoch's keys, without loading TenSEAL."""

from __future__ import annotations

import hashlib


def key_id(secret_context: bytes) -> str:
    """The key id of a secret context: the hex SHA-256 of its bytes as keyauth serves them.

    The keyless context is byte-identical for every key of a profile, so only the secret
    context tells two key epochs of the same number apart (keyauth's state lost and its
    keys generated again). Hashing it reveals nothing of the key.
    """
    return hashlib.sha256(secret_context).hexdigest()
