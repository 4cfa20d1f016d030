"""``LocalState``: the client's state directory, one private file per thing it remembers.

The credential and the secret contexts are the client's, shared by every job; what one
job's rounds remember lives in ``jobs/<job>/`` (``JobState``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import hefl_durable
from crypto import ENVELOPE_HEADERS, key_id
from fl_client.errors import ConfigError, LocalStateError, NotEnrolledError
from fl_client.state._codec import (
    credential_from_bytes,
    credential_to_bytes,
    model_cache_from_bytes,
    model_cache_to_bytes,
    pending_from_bytes,
    pending_to_bytes,
    privacy_ledger_from_bytes,
    privacy_ledger_to_bytes,
    progress_from_bytes,
    progress_to_bytes,
)
from fl_client.state._records import (
    Credential,
    EnvelopeFile,
    ModelCache,
    PendingUpdate,
    PrivacyLedger,
    Progress,
)
from hefl_study import is_job_name

__all__ = ["JobState", "LocalState"]

_CREDENTIAL = "credential.json"
_MODEL_CACHE = "model-cache.npz"
_PROGRESS = "progress.npz"
_PENDING = "pending-update.npz"
_PENDING_ENVELOPE = "pending-update.envelope"
_UPDATE_ID_AT = ENVELOPE_HEADERS.prefix.size + ENVELOPE_HEADERS.update.offset("update_id")
_UPDATE_ID = ENVELOPE_HEADERS.update.field_codec("update_id")
T = TypeVar("T")
_SPEC = "spec.json"
_PREPROCESSING = "preprocessing.json"
_PRIVACY = "privacy.json"

log = logging.getLogger(__name__)


class _PrivateDir:
    """A private directory: created with mode 0700 if missing, tightened to 0700 if others
    may read it; files written atomically, 0600.

    Raises
    ------
    LocalStateError
        ``root`` is unusable: not a directory, another user's, or others may write in it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            hefl_durable.make_private_dir(self.root)
        except hefl_durable.UnsafePathError as exc:
            raise LocalStateError(f"state directory {exc}") from None
        except OSError as exc:
            raise LocalStateError(f"state directory {self.root} is unusable: {exc}") from exc

    # -- low level: atomic, private, durable (hefl_durable) ----------------------------

    def _write(self, name: str, data: bytes, *, durable: bool = True) -> None:
        path = self.root / name
        try:
            hefl_durable.write_atomic(path, data, durable=durable)
        except OSError as exc:
            raise LocalStateError(f"could not write {path}: {exc}") from exc

    def _read(self, name: str) -> bytes | None:
        path = self.root / name
        try:
            return hefl_durable.read_private(path)
        except FileNotFoundError:
            return None
        except hefl_durable.UnsafePathError as exc:
            raise LocalStateError(str(exc)) from None
        except OSError as exc:
            raise LocalStateError(f"could not read {path}: {exc}") from exc

    def _delete(self, name: str, *, durable: bool = True) -> None:
        try:
            hefl_durable.remove(self.root / name, durable=durable)
        except OSError as exc:
            raise LocalStateError(f"could not delete {self.root / name}: {exc}") from exc


class LocalState(_PrivateDir):
    """The state directory of one client: its credential, secret contexts and jobs.

    Parameters
    ----------
    root
        The directory (``--state-dir``).
    """

    def job(self, name: str) -> JobState:
        """The directory of one job's rounds, ``jobs/<name>/``.

        Raises
        ------
        ConfigError
            ``name`` cannot name a job (it would not stay inside ``jobs/``).
        """
        if not is_job_name(name):
            raise ConfigError(f"{name!r} is not a job name: 1-63 lowercase letters, digits and '-'")
        _PrivateDir(self.root / "jobs")
        return JobState(self.root / "jobs" / name)

    # -- credential and keys -----------------------------------------------------------

    def save_credential(self, credential: Credential) -> None:
        self._write(_CREDENTIAL, credential_to_bytes(credential))

    def load_credential(self) -> Credential:
        raw = self._read(_CREDENTIAL)
        if raw is None:
            raise NotEnrolledError(
                f"no credential in {self.root}: run `hefl-client enroll --token ...` first"
            )
        return credential_from_bytes(raw, str(self.root / _CREDENTIAL))

    def save_secret_context(self, key_epoch: int, profile: str, data: bytes) -> None:
        """Keep a key epoch's secret context, with its key id (``crypto.key_id``)."""
        meta = {"profile": profile, "key_id": key_id(data)}
        self._write(f"secret-context-{key_epoch}.bin", data)
        self._write(f"secret-context-{key_epoch}.json", json.dumps(meta).encode())

    def load_secret_context(self, key_epoch: int) -> tuple[str, bytes] | None:
        """``(profile name, context bytes)`` of a key epoch, or ``None`` if not stored.

        A context whose bytes are not those of the key id stored with it (a crash while
        it was being replaced) counts as not stored: it is fetched again.
        """
        data = self._read(f"secret-context-{key_epoch}.bin")
        meta = self._read(f"secret-context-{key_epoch}.json")
        if data is None or meta is None:
            return None
        try:
            fields = json.loads(meta)
            profile = str(fields["profile"])
            stored_id = fields.get("key_id")  # absent: stored before key ids existed
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LocalStateError(f"secret context metadata of epoch {key_epoch}: {exc!r}") from exc
        if stored_id is not None and stored_id != key_id(data):
            log.info("secret context of key epoch %d half replaced; fetching it again", key_epoch)
            return None
        return profile, data


class JobState(_PrivateDir):
    """What one job's rounds remember: progress, the pending-update journal, the model
    cache, the spec trained, this hospital's preprocessing record and privacy ledger.

    One ``JobState`` per job and process: the progress and the journal are read from disk
    once and kept in memory. An acknowledged update's progress is committed by a writer
    thread while the next round pulls and trains (``acknowledge_pending``); every other
    write of the progress or the journal, and ``close``, waits for that commit first and
    raises its failure.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._progress: Progress | None = None
        self._pending: PendingUpdate | None = None
        self._pending_read = False
        self._writer: ThreadPoolExecutor | None = None
        self._committing: Future[None] | None = None

    def close(self) -> None:
        """Wait for the last acknowledged progress to be on disk (its failure is raised)."""
        try:
            self._settle()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def _settle(self) -> None:
        committing, self._committing = self._committing, None
        if committing is not None:
            committing.result()

    @property
    def name(self) -> str:
        return self.root.name

    # -- the spec and the preprocessing record (text) ------------------------------------

    def save_spec(self, canonical_json: str) -> None:
        self._write(_SPEC, canonical_json.encode("utf-8"))

    def load_spec(self) -> str | None:
        raw = self._read(_SPEC)
        return None if raw is None else raw.decode("utf-8")

    def save_preprocessing(self, record_json: str) -> None:
        self._write(_PREPROCESSING, record_json.encode("utf-8"))

    def load_preprocessing(self) -> str | None:
        raw = self._read(_PREPROCESSING)
        return None if raw is None else raw.decode("utf-8")

    # -- the privacy ledger (JSON) ------------------------------------------------------

    def save_privacy(self, ledger: PrivacyLedger) -> None:
        """Keep what DP-SGD has spent; written before the round's update is journaled."""
        self._write(_PRIVACY, privacy_ledger_to_bytes(ledger))

    def load_privacy(self) -> PrivacyLedger | None:
        raw = self._read(_PRIVACY)
        return None if raw is None else privacy_ledger_from_bytes(raw, str(self.root / _PRIVACY))

    # -- model cache -------------------------------------------------------------------

    def save_model_cache(self, cache: ModelCache) -> None:
        """Keep the last pulled model, not fsync'd: a cache lost or torn by a power cut
        costs one whole pull, never a wrong model (``load_model_cache``)."""
        self._write(_MODEL_CACHE, model_cache_to_bytes(cache), durable=False)

    def load_model_cache(self) -> ModelCache | None:
        """The cached model; ``None`` if there is none or it is torn (the zip's CRC)."""
        raw = self._read(_MODEL_CACHE)
        if raw is None:
            return None
        try:
            return model_cache_from_bytes(raw)
        except LocalStateError as exc:
            log.info("%s; the next pull takes the whole model", exc)
            return None

    # -- progress and the pending-update journal ----------------------------------------

    def load_progress(self) -> Progress:
        if self._progress is None:
            raw = self._read(_PROGRESS)
            self._progress = Progress() if raw is None else progress_from_bytes(raw)
        return self._progress

    def commit_progress(self, progress: Progress) -> None:
        self._settle()
        self._write(_PROGRESS, progress_to_bytes(progress))
        self._progress = progress

    def write_pending_envelope(
        self, write: Callable[[hefl_durable.Writer], T]
    ) -> tuple[T, EnvelopeFile]:
        """Write the next update's envelope to its file as ``write`` encrypts it (never
        held whole): what ``write`` returns, and the file for ``PendingUpdate.envelope``.

        The file is durable when this returns; it is the journal's only once
        ``write_pending`` names it (a crash in between leaves no pending update). The
        previous update's commit, which removes its envelope file, is done first.
        """
        self._settle()
        path = self.root / _PENDING_ENVELOPE
        try:
            result = hefl_durable.write_atomic_with(path, write)
        except OSError as exc:
            raise LocalStateError(f"could not write {path}: {exc}") from exc
        return result, EnvelopeFile(path)

    def write_pending(self, pending: PendingUpdate) -> None:
        """Journal an update before sending it, so a restart resends the same bytes and id.

        The previous update's progress is on disk before this entry replaces its own.
        """
        self._settle()
        self._write(_PENDING, pending_to_bytes(pending))
        self._pending, self._pending_read = pending, True

    def load_pending(self) -> PendingUpdate | None:
        if not self._pending_read:
            raw = self._read(_PENDING)
            pending = None if raw is None else pending_from_bytes(raw, self.root)
            # An entry of the committed update (a power cut can bring one back: its
            # removal, and its envelope's, are not fsync'd) is dropped unsent by
            # ``fl_client.rounds.push.resume``; its envelope file need not be there.
            if (
                pending is not None
                and isinstance(pending.envelope, EnvelopeFile)
                and pending.update_id != self.load_progress().last_update_id
            ):
                self._check_envelope_file(pending, pending.envelope)
            self._pending, self._pending_read = pending, True
        return self._pending

    def _check_envelope_file(self, pending: PendingUpdate, envelope: EnvelopeFile) -> None:
        try:
            head = envelope.head(_UPDATE_ID_AT + _UPDATE_ID.size)
        except OSError as exc:
            raise LocalStateError(f"the pending update's envelope is unreadable: {exc}") from exc
        if len(head) < _UPDATE_ID_AT + _UPDATE_ID.size or (
            _UPDATE_ID.unpack_from(head, _UPDATE_ID_AT)[0] != pending.update_id.bytes
        ):
            raise LocalStateError(
                f"{envelope.path} is not the envelope of pending update {pending.update_id}"
            )

    def clear_pending(self) -> None:
        self._settle()
        self._delete(_PENDING)
        self._delete(_PENDING_ENVELOPE)
        self._pending, self._pending_read = None, True

    def acknowledge_pending(self, pending: PendingUpdate) -> Progress:
        """Commit the progress a pending update carries, then drop the journal entry.

        The commit runs on the writer thread, off the round's path: until it is on disk
        the journal entry stays, and a crash meanwhile leads to a resend that the server
        acknowledges as a duplicate (committing it again changes nothing). The next
        journal entry, ``commit_progress``, ``clear_pending`` and ``close`` wait for it.
        The entry's removal is not fsync'd: one that a power cut brings back names the
        committed update (``last_update_id``), which ``fl_client.rounds.push.resume``
        drops unsent.
        """
        self._settle()
        progress = replace(pending.progress, last_update_id=pending.update_id)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="hefl-client-state")
        self._committing = self._writer.submit(self._commit_acknowledged, progress)
        self._progress = progress
        self._pending, self._pending_read = None, True
        return progress

    def _commit_acknowledged(self, progress: Progress) -> None:
        self._write(_PROGRESS, progress_to_bytes(progress))
        self._delete(_PENDING, durable=False)
        self._delete(_PENDING_ENVELOPE, durable=False)
