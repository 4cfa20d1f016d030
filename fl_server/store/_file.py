"""``FileStore``: one job's durable state in files under one locked directory."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import hefl_durable
from fl_server.errors import StateError
from fl_server.store._base import Store
from fl_server.store._checkpoint import checkpoint_from_file, write_checkpoint_file
from fl_server.store._lock import DirectoryLock
from fl_server.store._metrics import MetricsFile
from fl_server.store._records import Checkpoint, ControlRecord, JobRecord, LogRecord
from fl_server.store._wal import WriteAheadLog

__all__ = ["FileStore", "read_job_file"]

logger = logging.getLogger("fl_server.store")

_ROTATION_PREFIX = "rotation-"


def read_job_file(job_dir: Path) -> JobRecord | None:
    """The job stored in ``job_dir``, without opening (or creating) the store."""
    try:
        data = (job_dir / "job.json").read_bytes()
    except FileNotFoundError:
        return None
    return JobRecord.from_json(data)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class FileStore(Store):
    """One job's state in files under ``state_dir``, fsync'd and renamed (``hefl_durable``)::

        lock                 flock: one server per directory
        job.json             the job: name, spec, key epoch, profile (written once, atomically)
        layout.json          the model layout (written once, atomically)
        control.json         paused, done and why, time spent training (replaced atomically)
        checkpoint.bin       the model at some version, all blocks (replaced atomically)
        rotation-<epoch>.bin the model re-encrypted under key epoch <epoch>, while a key
                             rotation commits (in force once job.json names that epoch)
        wal/<seq>.log        accepted updates (and repairs) after the checkpoint, and those of
                             the repair window before it, in order
        metrics.jsonl        clients' evaluation reports
        integrity.jsonl      clients' integrity reports (checks of the models they decrypt)

    Parameters
    ----------
    state_dir
        Created (mode 0700) if missing. Locked for the lifetime of the store.
    max_metrics_reports
        The metrics and integrity files are compacted to the newest this many reports
        when they double.

    Raises
    ------
    StateError
        Another process holds the directory, another user owns it or others may write in
        it, or its contents are damaged.
    """

    def __init__(self, state_dir: Path, *, max_metrics_reports: int = 10_000) -> None:
        self.state_dir = state_dir
        wal_dir = state_dir / "wal"
        try:
            hefl_durable.make_private_dir(state_dir)
            hefl_durable.make_private_dir(wal_dir)
        except hefl_durable.UnsafePathError as exc:
            raise StateError(str(exc)) from exc
        self._lock = DirectoryLock(state_dir)
        self._wal = WriteAheadLog(wal_dir)
        self._metrics = MetricsFile(state_dir / "metrics.jsonl", max_metrics_reports)
        self._integrity = MetricsFile(state_dir / "integrity.jsonl", max_metrics_reports)
        self._settle_rotation()

    def _settle_rotation(self) -> None:
        """Finish or forget a key rotation a crash interrupted (``commit_rotation``).

        job.json is the commit point: a rotated model whose epoch it names is put in
        place; one it does not name never took effect and is deleted.
        """
        for path in sorted(self.state_dir.glob(f"{_ROTATION_PREFIX}*.bin")):
            try:
                epoch = int(path.stem.removeprefix(_ROTATION_PREFIX))
            except ValueError:
                raise StateError(f"unexpected file in the job directory: {path.name}") from None
            job = self.load_job()
            if job is not None and job.key_epoch == epoch:
                logger.warning("finishing the rotation to key epoch %d a crash interrupted", epoch)
                for _ in self._wal.read(-1):
                    pass  # learn where the log ends, so that every segment can be dropped
                rotated = checkpoint_from_file(path)
                if rotated is None:
                    raise StateError(f"{path.name} went away while the job was opened")
                self._install_rotated(path, rotated.seq)
            else:
                logger.warning(
                    "dropping %s: a rotation to key epoch %d that never committed", path.name, epoch
                )
                path.unlink()
                hefl_durable.fsync_dir(self.state_dir)

    def load_job(self) -> JobRecord | None:
        return read_job_file(self.state_dir)

    def save_job(self, job: JobRecord) -> None:
        hefl_durable.write_atomic(self.state_dir / "job.json", job.to_json())

    def load_layout(self) -> bytes | None:
        return _read(self.state_dir / "layout.json")

    def save_layout(self, layout_json: bytes) -> None:
        hefl_durable.write_atomic(self.state_dir / "layout.json", layout_json)

    def load_control(self) -> ControlRecord | None:
        data = _read(self.state_dir / "control.json")
        return ControlRecord.from_json(data) if data is not None else None

    def save_control(self, control: ControlRecord) -> None:
        hefl_durable.write_atomic(self.state_dir / "control.json", control.to_json())

    def load_checkpoint(self) -> Checkpoint | None:
        path = self.state_dir / "checkpoint.bin"
        return checkpoint_from_file(path)

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        path = self.state_dir / "checkpoint.bin"
        write_checkpoint_file(path, checkpoint)
        self._wal.drop_through(checkpoint.log_kept_after)

    def commit_rotation(self, job: JobRecord, checkpoint: Checkpoint) -> None:
        # 1. the re-encrypted model, not yet in force; 2. job.json names the new epoch: the
        # commit point; 3. the model takes the checkpoint's place and the old log goes.
        path = self.state_dir / f"{_ROTATION_PREFIX}{job.key_epoch:06d}.bin"
        write_checkpoint_file(path, checkpoint)
        self.save_job(job)
        self._install_rotated(path, checkpoint.seq)

    def _install_rotated(self, path: Path, seq: int) -> None:
        os.replace(path, self.state_dir / "checkpoint.bin")
        hefl_durable.fsync_dir(self.state_dir)
        # The log's updates are under the old key: no repair can subtract them any more.
        self._wal.drop_through(seq)

    def append_updates(self, records: Sequence[LogRecord]) -> None:
        self._wal.append(records)

    def read_log(self) -> Iterator[LogRecord]:
        return self._wal.read(-1)

    def load_metrics(self) -> list[dict[str, Any]]:
        return self._metrics.load()

    def append_metrics(self, report: Mapping[str, Any]) -> None:
        self._metrics.append(report)

    def load_integrity(self) -> list[dict[str, Any]]:
        return self._integrity.load()

    def append_integrity(self, report: Mapping[str, Any]) -> None:
        self._integrity.append(report)

    def close(self) -> None:
        self._wal.close()
        self._lock.release()
