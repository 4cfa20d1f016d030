"""The jobs of one state directory: opened at startup, created durably, looked up by name.

::

    state_dir/
      lock                       flock: one server per state directory
      jobs/<name>/               one job (``FileStore``: job.json, layout, log, checkpoints)
      jobs/.new-<name>-<hex>/    a job being created; a crash leaves it, the next start drops it

A job is created whole or not at all: its directory is written under a temporary name,
fsync'd, then renamed to ``jobs/<name>`` and the rename fsync'd before the 201.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import crypto
import hefl_durable
import hefl_study
from fl_server.domain import FailedJob
from fl_server.errors import JobExistsError, JobNotFoundError, ServerError, StateError
from fl_server.job_service import JobService
from fl_server.material import EpochContext
from fl_server.settings import ServerSettings
from fl_server.store import DirectoryLock, FileStore, JobRecord, read_job_file

__all__ = ["JobRegistry"]

logger = logging.getLogger("fl_server")

_CREATING = ".new-"


def keys_replaced_message(record: JobRecord, key_id: str, job_dir: Path) -> str:
    """What happened to a job whose epoch's keys keyauth replaced, and what can be done."""
    return (
        f"job {record.name} is not opened: keyauth's keys for key epoch {record.key_epoch} "
        f"were replaced: key id {key_id}, this job was created under {record.key_id}. "
        "Its model is encrypted under keys keyauth no longer has, so no hospital could "
        "train it. To continue this job, restore keyauth's state directory from its backup "
        f"(the one whose key epoch {record.key_epoch} has key id {record.key_id}) and "
        "restart keyauth, then fl_server; or give it up: create a new job under another "
        f"name (to free this name, move {job_dir} away and restart fl_server)"
    )


class JobRegistry:
    """Every job of ``settings.state_dir`` by name, and those that could not be opened.

    A job whose directory is damaged does not stop the others: it is left out, named in
    the log and in ``failed()``, and every call to it answers its ``StateError`` (500
    ``state_invalid``) until its directory is repaired or moved away and the server
    restarted.

    Parameters
    ----------
    settings
        ``state_dir`` and what every job's service takes.
    clock
        Seconds since the epoch; injectable for tests.

    Raises
    ------
    StateError
        The state directory is unusable, in use by another process, or holds the
        single-job state of an older fl_server.
    """

    def __init__(self, settings: ServerSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        state_dir = settings.state_dir
        self._jobs_dir = state_dir / "jobs"
        try:
            hefl_durable.make_private_dir(state_dir)
        except hefl_durable.UnsafePathError as exc:
            raise StateError(str(exc)) from exc
        self._dir_lock = DirectoryLock(state_dir)
        try:
            if (state_dir / "job.json").exists():
                raise StateError(
                    f"{state_dir} holds the one job of an fl_server from before jobs were "
                    "created from study specs; move it away and create the job again"
                )
            hefl_durable.make_private_dir(self._jobs_dir)
        except (StateError, hefl_durable.UnsafePathError) as exc:
            self._dir_lock.release()
            raise StateError(str(exc)) from exc
        self._lock = threading.Lock()  # guards the two dicts
        self._creating = threading.Lock()  # one creation at a time
        self._jobs: dict[str, JobService] = {}
        self._failed: dict[str, StateError] = {}
        self._drop_unfinished_creations()

    def _drop_unfinished_creations(self) -> None:
        for path in self._jobs_dir.glob(f"{_CREATING}*"):
            logger.warning("dropping %s: a job creation that never finished", path.name)
            shutil.rmtree(path)
        hefl_durable.fsync_dir(self._jobs_dir)

    # -- startup --------------------------------------------------------------------------

    def stored(self) -> dict[str, JobRecord]:
        """The job record of every job directory; an unreadable one is marked failed."""
        records = {}
        for path in sorted(self._jobs_dir.iterdir()):
            if not path.is_dir():
                logger.warning("ignoring %s in %s: not a job directory", path.name, self._jobs_dir)
                continue
            try:
                record = read_job_file(path)
                if record is None:
                    raise StateError("it has no job.json")
                if record.name != path.name:
                    raise StateError(f"its job.json names job {record.name!r}")
            except StateError as exc:
                self.fail(path.name, exc)
                continue
            records[path.name] = record
        return records

    def open(self, record: JobRecord, context: EpochContext) -> None:
        """Open a stored job and recover it (checkpoint and log); a failure is recorded.

        A job whose epoch's key id at keyauth (``context.key_id``) is not the one it was
        created under is not opened (``keys_replaced``). A job from before key ids records
        the key id it meets now: trust on first use.
        """
        if self._keys_replaced(record, context):
            return
        try:
            store = self._store(record.name)
            if record.key_id is None and context.key_id is not None:
                record = replace(record, key_id=context.key_id)
                store.save_job(record)
                logger.warning(
                    "job %s was created before jobs recorded their key id: it is bound from "
                    "now on to key id %s, keyauth's for key epoch %d (trusted on first use)",
                    record.name,
                    record.key_id,
                    record.key_epoch,
                )
            job = JobService(self._settings, record, context, store=store, clock=self._clock)
        except (ServerError, crypto.CryptoError, OSError) as exc:
            self.fail(record.name, exc)
            return
        with self._lock:
            self._jobs[record.name] = job

    def _keys_replaced(self, record: JobRecord, context: EpochContext) -> bool:
        """Fail the job of ``record`` if keyauth's key id of its epoch is not the job's."""
        if record.key_id is None or context.key_id in (None, record.key_id):
            return False
        self._failed_with(
            record.name,
            keys_replaced_message(record, context.key_id, self._jobs_dir / record.name),
        )
        return True

    def refuse_replaced_keys(self, context: EpochContext) -> list[JobService]:
        """Take out every open job of ``context``'s epoch whose key id is not its.

        For a server that meets keyauth's new keys while running: each such job fails as
        it would at startup. Returns the jobs taken out, for the caller to close.
        """
        replaced = [
            job
            for job in self.jobs()
            if job.record.key_epoch == context.key_epoch
            and self._keys_replaced(job.record, context)
        ]
        with self._lock:
            for job in replaced:
                self._jobs.pop(job.name, None)
        return replaced

    def fail(self, name: str, error: Exception | str) -> StateError:
        """Leave job ``name`` out: its directory cannot be used (``error`` says why).

        Returns the error every call to the job answers from now on.
        """
        return self._failed_with(
            name,
            f"job {name} could not be opened: {error}; repair or move away "
            f"{self._jobs_dir / name} and restart the server",
        )

    def _failed_with(self, name: str, detail: str) -> StateError:
        failure = StateError(detail)
        logger.error("%s", failure.detail)
        with self._lock:
            self._failed[name] = failure
        return failure

    def _store(self, name: str) -> FileStore:
        return FileStore(
            self._jobs_dir / name, max_metrics_reports=self._settings.max_metrics_reports
        )

    # -- looking up -----------------------------------------------------------------------

    def find(self, name: str) -> JobService | None:
        """The job called ``name``, ``None`` if there is none; a failed job's ``StateError``."""
        with self._lock:
            failure = self._failed.get(name)
            if failure is not None:
                raise failure
            return self._jobs.get(name)

    def get(self, name: str) -> JobService:
        """The job called ``name``; ``JobNotFoundError`` if there is none."""
        job = self.find(name)
        if job is None:
            raise JobNotFoundError(f"there is no job {name!r}")
        return job

    def existing(self, spec: hefl_study.StudySpec) -> JobService | None:
        """The job of ``spec`` if it exists (``None`` if the name is free).

        Raises
        ------
        JobExistsError
            A job of that name exists with another spec.
        StateError
            A job of that name is there but could not be opened.
        """
        job = self.find(spec.name)
        if job is not None and job.record.spec_sha256 != spec.sha256:
            raise JobExistsError(
                f"job {spec.name} exists with another spec (sha256 "
                f"{job.record.spec_sha256[:16]}…, this one {spec.sha256[:16]}…); "
                "choose another name"
            )
        return job

    def jobs(self) -> list[JobService]:
        """Every open job, by name."""
        with self._lock:
            return [self._jobs[name] for name in sorted(self._jobs)]

    def failed(self) -> list[FailedJob]:
        """Every job left out at startup, by name, with why."""
        with self._lock:
            return [FailedJob(name, self._failed[name].detail) for name in sorted(self._failed)]

    # -- creating -------------------------------------------------------------------------

    def create(self, spec: hefl_study.StudySpec, context: EpochContext) -> tuple[JobService, bool]:
        """The job of ``spec``, created on ``context``'s key epoch unless it exists.

        Returns the job and whether this call created it (the same spec again finds it).

        Raises
        ------
        JobExistsError
            A job of that name exists with another spec.
        StateError
            A job of that name is there but could not be opened, or the directory
            cannot be written.
        crypto.CryptoError
            ``context`` is not a usable keyless context of its profile.
        """
        spec_json = hefl_study.spec_to_json(spec)
        sha256 = spec.sha256
        # Refused before anything is written: a job nobody can train is no job.
        crypto.ServerCipher(context.public_context, crypto.get_profile(context.profile))
        with self._creating:
            existing = self.existing(spec)
            if existing is not None:
                return existing, False
            record = JobRecord(
                job_id=uuid.uuid4().hex,
                name=spec.name,
                spec_json=spec_json,
                spec_sha256=sha256,
                key_epoch=context.key_epoch,
                profile=context.profile,
                created_at=self._clock(),
                key_id=context.key_id,
            )
            self._write(record)
            try:
                job = JobService(
                    self._settings,
                    record,
                    context,
                    store=self._store(record.name),
                    clock=self._clock,
                )
            except (ServerError, crypto.CryptoError) as exc:
                # The directory is there: the job exists, but cannot be used until restart.
                raise self.fail(record.name, exc) from exc
            with self._lock:
                self._jobs[record.name] = job
        logger.info(
            "job %s created on key epoch %d (key id %s, profile %s, spec sha256 %s)",
            record.name,
            record.key_epoch,
            record.key_id,
            record.profile,
            sha256[:16],
        )
        return job, True

    def _write(self, record: JobRecord) -> None:
        """The job's directory, whole: written aside, then renamed into place (durably)."""
        aside = self._jobs_dir / f"{_CREATING}{record.name}-{uuid.uuid4().hex[:8]}"
        try:
            store = FileStore(aside)
            try:
                store.save_job(record)
            finally:
                store.close()
            os.rename(aside, self._jobs_dir / record.name)
            hefl_durable.fsync_dir(self._jobs_dir)
        except OSError as exc:
            shutil.rmtree(aside, ignore_errors=True)
            raise StateError(f"cannot create job {record.name}: {exc}") from exc

    def close(self) -> None:
        """Close every job (each checkpoints), then release the state directory."""
        for job in self.jobs():
            job.close()
        self._dir_lock.release()

    @property
    def state_dir(self) -> Path:
        return self._settings.state_dir
