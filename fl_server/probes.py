"""Probe models: a past version rebuilt exactly, or a good version plus one sender's update.

A past version ``x`` is the model minus each update applied after it, at the weight it
was applied at (and, with hospital-level DP, minus each later update's noise, drawn again
from its seed): ciphertext addition is exact in the ring, so the rebuilt ciphertexts are
those the job had at ``x``. Runs on the apply worker; the model's shards rebuild a copy
(``ShardBackend.probe``); the envelopes come from the log.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import crypto
from fl_server.domain import ProbeView
from fl_server.recovery import stage_logged
from fl_server.state import ModelState
from fl_server.store import UpdateRecord

__all__ = ["ProbeModel", "build_probe_model", "needed_seqs"]


@dataclass(frozen=True)
class ProbeModel:
    """A probe's model envelope, served to clients while the probe is offered."""

    probe: ProbeView
    job_id: str
    body: bytes = field(repr=False)

    @property
    def etag(self) -> str:
        suffix = f"+{self.probe.update_id}" if self.probe.update_id else ""
        return f'"{self.job_id[:16]}-{self.probe.version}{suffix}"'


def build_probe_model(
    state: ModelState,
    limits: crypto.EnvelopeLimits,
    probe: ProbeView,
    envelopes: Mapping[int, bytes],
    removed: Sequence[uuid.UUID],
) -> ProbeModel:
    """Rebuild ``probe.version`` (plus ``probe.update_id``'s update, if named).

    ``envelopes`` maps each ``seq`` the rebuild needs (``needed_seqs``) to its envelope.
    """
    subtract = [
        (stage_logged(state, envelopes[r.seq], limits), r.weight)
        for r in _later(state, probe.version, removed)
    ]
    add = []
    if probe.update_id is not None:
        record = _record(state, probe.update_id)
        add.append((stage_logged(state, envelopes[record.seq], limits), record.weight))
    # hospital-level DP: every later update's noise, a removed one's too (a repair leaves
    # it in the model)
    noise = (
        None
        if state.noise is None
        else state.noise.draws(state.history.after(probe.version, state.version))
    )
    rebuilt = state.backend.probe(subtract, add, noise)
    data = tuple(crypto.CipherBlock(i, block) for i, block in enumerate(rebuilt))
    snapshot = state.snapshot
    model = crypto.EncryptedModel(snapshot.fingerprint, probe.version, snapshot.key_epoch, data)
    return ProbeModel(probe, state.job.job_id, crypto.model_to_bytes(model))


def needed_seqs(state: ModelState, probe: ProbeView, removed: Sequence[uuid.UUID]) -> set[int]:
    """The ``seq`` of each logged update whose envelope the probe's rebuild needs."""
    seqs = {r.seq for r in _later(state, probe.version, removed)}
    if probe.update_id is not None:
        seqs.add(_record(state, probe.update_id).seq)
    return seqs


def _later(state: ModelState, version: int, removed: Sequence[uuid.UUID]) -> list[UpdateRecord]:
    # Updates in the model after ``version`` (buffered ones are not in it yet).
    gone = set(removed)
    return [r for r in state.history.after(version, state.version) if r.update_id not in gone]


def _record(state: ModelState, update_id: str) -> UpdateRecord:
    record = state.history.get(uuid.UUID(update_id))
    if record is None:
        raise KeyError(f"update {update_id} is not in the repair window")
    return record
