"""Opening a job's layout, and rebuilding its model at startup from the checkpoint and the log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import crypto
import hefl_study
from fl_server.errors import StateError
from fl_server.hospital_privacy import update_noise
from fl_server.shards import ShardBackend, Staged
from fl_server.state import ModelState
from fl_server.store import JobRecord, ReleaseRecord, RepairRecord, Store, UpdateRecord

__all__ = ["OpenLayout", "Recovered", "open_layout", "recover", "stage_logged"]

logger = logging.getLogger("fl_server")


@dataclass(frozen=True)
class OpenLayout:
    """A job's model layout, parsed, and the envelope limits it implies."""

    layout: crypto.ModelLayout
    limits: crypto.EnvelopeLimits


def open_layout(layout_json: bytes, profile: crypto.CkksProfile) -> OpenLayout:
    """The layout of ``layout_json``; ``StateError`` if it is unreadable."""
    try:
        layout = crypto.ModelLayout.from_json(layout_json)
    except crypto.LayoutError as exc:
        raise StateError(f"the stored layout is unreadable: {exc}") from exc
    limits = crypto.EnvelopeLimits(
        n_blocks=layout.n_blocks,
        max_block_bytes=profile.max_block_bytes,
        expected_fingerprint=layout.fingerprint,
    )
    return OpenLayout(layout, limits)


def stage_logged(state: ModelState, envelope: bytes, limits: crypto.EnvelopeLimits) -> Staged:
    """The blocks of a logged update envelope, staged; ``StateError`` if unreadable."""
    try:
        update = crypto.update_from_bytes(envelope, limits)
        return state.stage((b.index, b.data) for b in update.blocks)
    except crypto.CryptoError as exc:
        raise StateError(f"a logged update envelope is unreadable: {exc}") from exc


@dataclass(frozen=True)
class Recovered:
    """What a job's directory holds: no layout, a layout without a model, or both."""

    layout: OpenLayout | None = None
    state: ModelState | None = None
    checkpoint_version: int = 0


def recover(
    store: Store,
    backend: ShardBackend,
    job: JobRecord,
    *,
    max_staleness: int,
    repair_window: int = 16,
    privacy: hefl_study.PrivacySpec | None = None,
    directory: Path | None = None,
) -> Recovered:
    """The layout and the model the acknowledged updates built: the checkpoint, then the log.

    The log's repairs and releases are replayed in their place among the updates; the
    updates the checkpoint holds already are only remembered (a repair may need them).
    ``privacy`` is the study's: with hospital-level DP each replayed update brings the
    noise of its logged seed again. The published model's files go to ``directory``.

    Raises
    ------
    StateError
        The stored state is damaged, or ``backend`` is not of the job's profile.
    """
    profile = backend.profile
    if job.profile != profile.name:
        raise StateError(
            f"job {job.name} uses profile {job.profile!r} but keyauth gave {profile.name!r} "
            f"for its key epoch {job.key_epoch}"
        )
    layout_json = store.load_layout()
    checkpoint = store.load_checkpoint()
    if layout_json is None:
        if checkpoint is not None or next(store.read_updates(0), None) is not None:
            raise StateError("the job has a model or logged updates but no layout")
        return Recovered()
    layout = open_layout(layout_json, profile)
    if checkpoint is None:
        if next(store.read_updates(0), None) is not None:
            raise StateError("the log holds updates but there is no model checkpoint")
        return Recovered(layout)
    checkpoint_version, checkpoint_seq = checkpoint.version, checkpoint.seq
    state = ModelState.from_checkpoint(
        backend,
        job,
        layout.layout.fingerprint,
        checkpoint,
        max_staleness=max_staleness,
        repair_window=repair_window,
        noise=update_noise(privacy, layout.layout),
        directory=directory,
    )
    del checkpoint  # its blocks are in the model's files now
    replayed = repairs = 0
    for logged in store.read_log():
        if isinstance(logged, UpdateRecord):
            if logged.seq <= checkpoint_seq:
                state.remember(logged)
                continue
            state.apply(logged, stage_logged(state, logged.envelope, layout.limits))
            replayed += 1
        elif logged.entry <= state.entries:
            continue  # the checkpoint holds it already
        elif isinstance(logged, RepairRecord):
            removed = [stage_logged(state, e, layout.limits) for e in logged.envelopes]
            state.repair(logged, removed)
            repairs += 1
        elif isinstance(logged, ReleaseRecord):
            state.release(logged)
    state.publish()
    logger.info(
        "recovered job %s at version %d (checkpoint %d + %d logged updates%s)",
        job.name,
        state.version,
        checkpoint_version,
        replayed,
        f", {repairs} repair{'s' if repairs != 1 else ''}" if repairs else "",
    )
    return Recovered(layout, state, checkpoint_version)
