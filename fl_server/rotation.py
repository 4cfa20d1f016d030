"""Key rotation of a running job: one hospital re-encrypts the model under keyauth's next epoch.

docs/fl_server.md, "Key rotation". The administrator starts it; the model stops at a
version boundary (a partly filled buffer is added and checkpointed) and updates are
refused (``job_rotating``) while one hospital, not revoked and not quarantined, pulls
that version, decrypts and checks it under the old epoch, encrypts it under the new one
and uploads it. The server swaps the model atomically and durably
(``Store.commit_rotation``: job.json naming the new epoch is the commit point), and the
version moves on. A hospital that does not upload within ``rotation_timeout`` seconds is
passed over for the next; with none left the rotation ends and the job trains on under
its old epoch. A rotation under way is not durable: after a crash the job is on its old
epoch and trains on, and the administrator starts the rotation again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import crypto
from fl_server.domain import RotationDoneView, RotationStatus, RotationView
from fl_server.errors import (
    InvalidInputError,
    KeyEpochMismatchError,
    RotationNotOfferedError,
    RotationRefusedError,
    VersionAheadError,
)
from fl_server.job import JobLifecycle
from fl_server.journal import Journal
from fl_server.material import EpochContext
from fl_server.settings import ServerSettings
from fl_server.store import RotationEntry, Store
from fl_server.worker import ApplyWorker
from hefl_wire import AccessClaims

__all__ = ["JobRotation"]

logger = logging.getLogger("fl_server")

# Problem codes of updates refused because they are under an epoch the job left.
RETRAINED_CODES = ("job_rotating", "key_epoch_mismatch")


@dataclass
class _Pending:
    """The rotation under way: where to, which version, whom it asked and when."""

    target: EpochContext
    version: int
    started_at: float
    candidates: Callable[[], list[str]]
    asked: list[str] = field(default_factory=list)
    client_id: str | None = None
    deadline: float | None = None


class JobRotation:
    """One job's key rotation (its state machine; the swap runs on the apply worker).

    Parameters
    ----------
    settings
        ``rotation_timeout``.
    lifecycle
        The job and its live model.
    store, journal, worker, clock
        The job's durable state, the thread that writes it, the thread that changes the
        model, seconds since the epoch.
    healthy
        Whether the job's integrity is healthy (no rotation during a search).
    after_swap
        Called on the worker with the first version of the new epoch.
    """

    def __init__(
        self,
        settings: ServerSettings,
        lifecycle: JobLifecycle,
        *,
        store: Store,
        journal: Journal,
        worker: ApplyWorker,
        healthy: Callable[[], bool],
        after_swap: Callable[[int], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._lifecycle = lifecycle
        self._store = store
        self._journal = journal
        self._worker = worker
        self._healthy = healthy
        self._after_swap = after_swap
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: _Pending | None = None
        self._asked: tuple[str, ...] = ()
        self._detail: str | None = None

    @property
    def _name(self) -> str:
        return self._lifecycle.record.name

    # -- reading ----------------------------------------------------------------------------

    def view(self) -> RotationView | None:
        with self._lock:
            pending = self._pending
            if pending is None:
                return None
            return RotationView(
                key_epoch=pending.target.key_epoch,
                key_id=pending.target.key_id,
                version=pending.version,
                client_id=pending.client_id,
                deadline=pending.deadline,
                started_at=pending.started_at,
            )

    def status(self, rejected: dict[str, int]) -> RotationStatus:
        """The rotation's part of the status; ``rejected`` counts refused updates by code."""
        with self._lock:
            asked, detail = self._asked, self._detail
        return RotationStatus(
            done=tuple(
                RotationDoneView(
                    from_epoch=r.from_epoch,
                    to_epoch=r.to_epoch,
                    key_id=r.key_id,
                    version=r.version,
                    client_id=r.client_id,
                    started_at=r.started_at,
                    at=r.at,
                )
                for r in self._lifecycle.record.rotations
            ),
            asked=asked,
            updates_retrained=sum(rejected.get(code, 0) for code in RETRAINED_CODES),
            detail=detail,
        )

    # -- the administrator ------------------------------------------------------------------

    def start(self, target: EpochContext, candidates: Callable[[], list[str]]) -> Future[None]:
        """Start moving the job to ``target`` (keyauth's current epoch); ``candidates`` are
        the hospitals that may re-encrypt, best first (not revoked). Resolves once a
        hospital is asked; a rotation to the same epoch under way already is a no-op.

        Raises (through the future)
        ---------------------------
        RotationRefusedError
            The epoch is not newer than the job's, of another profile, the job's integrity
            is being searched, another rotation is under way, or no hospital can be asked.
        JobNotStartedError, JobNotTrainingError
            The job has no model yet, or is done.
        """
        self._lifecycle.require_writable()
        return self._worker.submit(lambda: self._start(target, candidates))

    def _start(self, target: EpochContext, candidates: Callable[[], list[str]]) -> None:
        lifecycle = self._lifecycle
        state = lifecycle.require_started()
        lifecycle.require_not_done()
        record = lifecycle.record
        pending = self._pending
        if pending is not None:
            if pending.target.key_epoch == target.key_epoch:
                return
            raise RotationRefusedError(
                f"a rotation to key epoch {pending.target.key_epoch} is under way"
            )
        if target.key_epoch <= record.key_epoch:
            raise RotationRefusedError(
                f"keyauth's current key epoch {target.key_epoch} is not newer than the job's "
                f"epoch {record.key_epoch}: make new keys first (hefl-admin epochs rotate), "
                "then rotate the job"
            )
        if target.profile != record.profile:
            raise RotationRefusedError(
                f"keyauth's current key epoch {target.key_epoch} is of profile "
                f"{target.profile!r}, the job's {record.profile!r}: a model cannot move "
                "between profiles"
            )
        if not self._healthy():
            raise RotationRefusedError(
                "the job is locating a corrupted update: rotate once its integrity is healthy"
            )
        if not self._eligible(candidates, ()):
            raise RotationRefusedError(
                "no hospital can re-encrypt the model: none not revoked or quarantined has "
                "been seen by this server since it started; start the rotation again once "
                "hospitals train"
            )
        # A version boundary: a partly filled buffer goes into the model, durably (a
        # checkpoint), so that the version hospitals see is the one re-encrypted.
        if state.flush_buffer():
            self._journal.wait_durable(state.seq)
            state.publish()
            checkpoint = state.checkpoint()
            self._journal.call(lambda: self._store.write_checkpoint(checkpoint)).result()
            lifecycle.checkpointed(state.version)
        else:
            self._journal.wait_durable(state.seq)
            state.publish()
        with self._lock:
            self._pending = _Pending(target, state.version, self._clock(), candidates)
            self._detail = None
        lifecycle.rotating = True
        logger.info(
            "job %s: rotating from key epoch %d to %d at version %d",
            self._name,
            record.key_epoch,
            target.key_epoch,
            state.version,
        )
        self._ask_next()

    # -- on the worker ----------------------------------------------------------------------

    def tick(self) -> None:
        """The hospital asked did not upload in time: ask the next."""
        pending = self._pending
        if pending is None or pending.deadline is None or self._clock() < pending.deadline:
            return
        logger.warning(
            "job %s: hospital %s did not re-encrypt version %d within %g s; asking another",
            self._name,
            pending.client_id,
            pending.version,
            self._settings.rotation_timeout,
        )
        self._ask_next()

    def cancel(self, why: str) -> None:
        """End the rotation under way (the job is done, or the model changed under it)."""
        if self._pending is not None:
            self._end(why)

    def _eligible(self, candidates: Callable[[], list[str]], asked: Sequence[str]) -> list[str]:
        """The hospitals that may be asked, best first: not asked yet, not quarantined."""
        state = self._lifecycle.state
        return [
            c
            for c in candidates()
            if c not in asked and not (state is not None and state.is_quarantined(c))
        ]

    def _ask_next(self) -> None:
        pending = self._pending
        assert pending is not None
        left = self._eligible(pending.candidates, pending.asked)
        if not left:
            self._end(
                f"no hospital re-encrypted version {pending.version} (asked: "
                f"{', '.join(pending.asked) or 'none'}): the job trains on under key epoch "
                f"{self._lifecycle.record.key_epoch}; start the rotation again"
            )
            return
        with self._lock:
            pending.client_id = left[0]
            pending.deadline = self._clock() + self._settings.rotation_timeout
            pending.asked.append(left[0])
            self._asked = tuple(pending.asked)
        logger.info(
            "job %s: asking hospital %s to re-encrypt version %d under key epoch %d",
            self._name,
            left[0],
            pending.version,
            pending.target.key_epoch,
        )

    def _end(self, detail: str | None) -> None:
        with self._lock:
            self._pending = None
            self._detail = detail
        self._lifecycle.rotating = False
        if detail is not None:
            logger.error("job %s: key rotation ended: %s", self._name, detail)

    # -- the hospital asked -----------------------------------------------------------------

    def receive(self, client: AccessClaims, body: bytes) -> Future[int]:
        """The re-encrypted model from the hospital asked; resolves with the new version
        once the swap is durable.

        Raises
        ------
        RotationNotOfferedError
            No rotation is under way, or another hospital is asked.
        KeyEpochMismatchError, VersionAheadError, IncompleteModelError, InvalidInputError
            The envelope is not the asked version, whole, under the new epoch.
        """
        self._lifecycle.require_writable()
        self._offered_to(client)
        model = self._lifecycle.whole_model(body, "a re-encrypted model")
        return self._worker.submit(lambda: self._swap(client, model))

    def _offered_to(self, client: AccessClaims) -> _Pending:
        pending = self._pending
        if pending is None or pending.client_id != client.client_id:
            raise RotationNotOfferedError(
                "no re-encryption of the model is asked of this client now"
            )
        return pending

    def _swap(self, client: AccessClaims, model: crypto.EncryptedModel) -> int:
        pending = self._offered_to(client)
        target = pending.target
        if model.key_epoch != target.key_epoch:
            raise KeyEpochMismatchError(
                f"re-encrypted under key epoch {model.key_epoch}; the job moves to "
                f"{target.key_epoch}",
                key_epoch=target.key_epoch,
            )
        lifecycle = self._lifecycle
        state = lifecycle.require_started()
        if state.version != pending.version:
            # a repair moved the model meanwhile: what was re-encrypted is not the model
            self._end(
                f"the model moved from version {pending.version} to {state.version} during "
                "the rotation (a repair): start the rotation again"
            )
            raise RotationNotOfferedError("the rotation ended: the model changed under it")
        lifecycle.require_not_done()
        if model.version != pending.version:
            raise VersionAheadError(
                f"re-encrypted version {model.version}; the job asks for version {pending.version}",
                current_version=pending.version,
            )
        old = lifecycle.record
        entry = RotationEntry(
            from_epoch=old.key_epoch,
            to_epoch=target.key_epoch,
            key_id=target.key_id,
            version=state.version + 1,
            seq=state.seq,
            client_id=client.client_id,
            started_at=pending.started_at,
            at=self._clock(),
        )
        record = replace(
            old,
            key_epoch=target.key_epoch,
            key_id=target.key_id,
            rotations=(*old.rotations, entry),
        )
        try:
            rotated = state.rekeyed(record, model)
        except crypto.CryptoError as exc:
            raise InvalidInputError.from_crypto(exc) from exc
        checkpoint = rotated.checkpoint()
        # Durable before anyone sees it: job.json naming the new epoch is the commit point.
        self._journal.call(lambda: self._store.commit_rotation(record, checkpoint)).result()
        lifecycle.swap(record, rotated)
        self._end(None)
        logger.info(
            "job %s: key epoch %d → %d, version %d re-encrypted by %s in %.1f s",
            self._name,
            entry.from_epoch,
            entry.to_epoch,
            entry.version,
            client.client_id,
            entry.at - entry.started_at,
        )
        self._after_swap(entry.version)
        return entry.version
