"""The client's local directory: credential, secret contexts, and per job its journal and cache.

Every file is written atomically (temporary file, fsync, rename, fsync of the directory)
with mode 0600 in a directory of mode 0700, through ``hefl_durable``; the model cache is
not fsync'd (a cache a power cut tears is read as none: the next pull takes the whole
model). A round costs four fsyncs: the journaled update and the committed progress, each
file and directory; the progress is committed by a writer thread during the next round's
pull and training (``JobState.acknowledge_pending``). Arrays are stored
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
