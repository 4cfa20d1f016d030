"""Opening a job's layout, and rebuilding its model at startup from the checkpoint and the log."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import crypto
from fl_server.errors import StateError
from fl_server.state import ModelState
from fl_server.store import JobRecord, Store

__all__ = ["OpenLayout", "Recovered", "open_layout", "recover"]

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


@dataclass(frozen=True)
class Recovered:
    """What a job's directory holds: no layout, a layout without a model, or both."""

    layout: OpenLayout | None = None
    state: ModelState | None = None
    checkpoint_version: int = 0


def recover(
    store: Store, cipher: crypto.ServerCipher, job: JobRecord, *, max_staleness: int
) -> Recovered:
    """The layout and the model the acknowledged updates built: the checkpoint, then the log.

    Raises
    ------
    StateError
        The stored state is damaged, or ``cipher`` is not of the job's profile.
    """
    profile = cipher.profile
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
    state = ModelState.from_checkpoint(
        cipher, job, layout.layout.fingerprint, checkpoint, max_staleness=max_staleness
    )
    replayed = 0
    for logged in store.read_updates(checkpoint.seq):
        try:
            update = crypto.update_from_bytes(logged.envelope, layout.limits)
            blocks = [(b.index, cipher.load_update_block(b.data)) for b in update.blocks]
        except crypto.CryptoError as exc:
            raise StateError(f"logged update seq {logged.seq} is unreadable: {exc}") from exc
        state.apply(logged, blocks)
        replayed += 1
    state.publish()
    logger.info(
        "recovered job %s at version %d (checkpoint %d + %d logged updates)",
        job.name,
        state.version,
        checkpoint.version,
        replayed,
    )
    return Recovered(layout, state, checkpoint.version)
