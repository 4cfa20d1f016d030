"""Opening a job record, and rebuilding the model at startup from its checkpoint and the log."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import crypto
from fl_server.errors import StateError
from fl_server.state import ModelState
from fl_server.store import JobRecord, Store

__all__ = ["OpenJob", "Recovered", "open_job", "recover"]

logger = logging.getLogger("fl_server")


@dataclass(frozen=True)
class OpenJob:
    """A job record with its parsed layout and the envelope limits the layout implies."""

    record: JobRecord
    layout: crypto.ModelLayout
    limits: crypto.EnvelopeLimits


def open_job(record: JobRecord, profile: crypto.CkksProfile) -> OpenJob:
    """``record`` with its layout parsed; ``StateError`` if the layout is unreadable."""
    try:
        layout = crypto.ModelLayout.from_json(record.layout_json)
    except crypto.LayoutError as exc:
        raise StateError(f"the stored layout is unreadable: {exc}") from exc
    limits = crypto.EnvelopeLimits(
        n_blocks=layout.n_blocks,
        max_block_bytes=profile.max_block_bytes,
        expected_fingerprint=layout.fingerprint,
    )
    return OpenJob(record, layout, limits)


@dataclass(frozen=True)
class Recovered:
    """What the state directory holds: no job, a job without a model, or both."""

    job: OpenJob | None = None
    state: ModelState | None = None
    checkpoint_version: int = 0


def recover(
    store: Store,
    cipher: crypto.ServerCipher,
    *,
    key_epoch: int,
    max_staleness: int,
) -> Recovered:
    """The job and the model the acknowledged updates built: the checkpoint, then the log.

    Raises
    ------
    StateError
        The stored state is damaged or belongs to another key epoch or profile.
    """
    profile = cipher.profile
    record = store.load_job()
    if record is None:
        return Recovered()
    if record.profile != profile.name or record.key_epoch != key_epoch:
        raise StateError(
            f"the stored job uses key epoch {record.key_epoch} / profile {record.profile!r} but "
            f"keyauth gave epoch {key_epoch} / {profile.name!r}"
        )
    job = open_job(record, profile)
    checkpoint = store.load_checkpoint()
    if checkpoint is None:
        if next(store.read_updates(0), None) is not None:
            raise StateError("the log holds updates but there is no model checkpoint")
        return Recovered(job)
    state = ModelState.from_checkpoint(
        cipher, record, job.layout.fingerprint, checkpoint, max_staleness=max_staleness
    )
    replayed = 0
    for logged in store.read_updates(checkpoint.seq):
        try:
            update = crypto.update_from_bytes(logged.envelope, job.limits)
            blocks = [(b.index, cipher.load_update_block(b.data)) for b in update.blocks]
        except crypto.CryptoError as exc:
            raise StateError(f"logged update seq {logged.seq} is unreadable: {exc}") from exc
        state.apply(logged, blocks)
        replayed += 1
    state.publish()
    logger.info(
        "recovered job %s at version %d (checkpoint %d + %d logged updates)",
        record.job_id,
        state.version,
        checkpoint.version,
        replayed,
    )
    return Recovered(job, state, checkpoint.version)
