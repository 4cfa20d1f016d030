"""The client's local directory: credential, secret contexts, and per job its journal and cache.

Every file is written atomically (temporary file, fsync, rename, fsync of the directory)
with mode 0600 in a directory of mode 0700, through ``hefl_durable``. Arrays are stored
with ``numpy.savez`` and read back with ``allow_pickle=False``: nothing here can execute
code when loaded.
"""

from fl_client.state._local import JobState, LocalState
from fl_client.state._records import (
    Credential,
    EnvelopeFile,
    ModelCache,
    PendingUpdate,
    PrivacyLedger,
    Progress,
)

__all__ = [
    "Credential",
    "EnvelopeFile",
    "JobState",
    "LocalState",
    "ModelCache",
    "PendingUpdate",
    "PrivacyLedger",
    "Progress",
]
