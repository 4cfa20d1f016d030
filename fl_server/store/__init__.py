"""One job's durable state behind a small interface: the job, a write-ahead log, checkpoints.

``Store`` is the interface; ``FileStore`` the durable implementation (files fsync'd and
renamed, see its docstring for the layout) and ``MemoryStore`` its twin for unit tests.
"""

from fl_server.store._base import Store
from fl_server.store._file import FileStore, read_job_file
from fl_server.store._lock import DirectoryLock
from fl_server.store._memory import MemoryStore
from fl_server.store._records import (
    Checkpoint,
    ControlRecord,
    FileBlocks,
    JobRecord,
    LogRecord,
    ReleaseRecord,
    RemovedUpdate,
    RepairRecord,
    RotationEntry,
    UpdateRecord,
)

__all__ = [
    "Checkpoint",
    "ControlRecord",
    "DirectoryLock",
    "FileBlocks",
    "FileStore",
    "JobRecord",
    "LogRecord",
    "MemoryStore",
    "ReleaseRecord",
    "RemovedUpdate",
    "RepairRecord",
    "RotationEntry",
    "Store",
    "UpdateRecord",
    "read_job_file",
]
