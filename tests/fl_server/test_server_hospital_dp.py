"""Hospital-level DP at the server: the noise of each update, replayed, rebuilt, kept by
repairs, off the canaries; and each hospital's ε as Opacus counts it."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest
from opacus.accountants import RDPAccountant  # type: ignore[import-untyped]

import crypto
from fl_server.domain import ProbeView
from fl_server.hospital_privacy import RDP_ORDERS, UpdateNoise, hospital_epsilon
from fl_server.probes import build_probe_model
from fl_server.recovery import recover, stage_logged
from fl_server.shards import InProcessBackend
from fl_server.state import ModelState
from fl_server.store import JobRecord, MemoryStore, RemovedUpdate, RepairRecord, UpdateRecord
from hefl_study import PrivacySpec

Z, CLIP = 0.5, 2.0  # std z·C·w = 1.0 · w
PRIVACY = PrivacySpec(level="hospital", clip=CLIP, noise_multiplier=Z)
JOB = JobRecord("job-id", "hdp", "{}", "0" * 64, 1, "test-n2048", 0.0)


@dataclass
class Study:
    client: crypto.ClientCipher
    server: crypto.ServerCipher
    layout: crypto.ModelLayout
    limits: crypto.EnvelopeLimits
    store: MemoryStore
    initial: bytes  # the initial model envelope

    def state(self, *, noise: bool = True) -> ModelState:
        return ModelState.initial(
            InProcessBackend(self.server),
            JOB,
            crypto.model_from_bytes(self.initial, self.limits),
            max_staleness=100,
            noise=UpdateNoise.for_layout(Z * CLIP, self.layout) if noise else None,
        )

    def update(self, values: np.ndarray, base_version: int) -> bytes:
        blocks = tuple(
            crypto.CipherBlock(i, self.client.encrypt_update_block(row))
            for i, row in enumerate(values)
        )
        update = crypto.EncryptedUpdate(
            self.layout.fingerprint, base_version, 1, uuid.uuid4(), blocks
        )
        return crypto.update_to_bytes(update)

    def apply(
        self,
        state: ModelState,
        values: np.ndarray,
        weight: float,
        buffer_size: int = 1,
        samples: int | None = None,
    ) -> UpdateRecord:
        envelope = self.update(values, state.version)
        update = crypto.update_from_bytes(envelope, self.limits)
        record = state.next_record(
            update,
            client_id=f"c{state.seq % 2}",
            staleness=0,
            weight=weight,
            received_at=0.0,
            digest=b"\0" * 32,
            envelope=envelope,
            buffer_size=buffer_size,
            target_updates=None,
            samples=samples,
            deferred=samples is not None,
        )
        self.store.append_updates([record])
        state.apply(record, stage_logged(state, envelope, self.limits))
        return record

    def decrypt(self, blocks: Sequence[bytes]) -> np.ndarray:
        return np.stack([self.client.decrypt_block(b) for b in blocks])


@pytest.fixture
def study(small_client: crypto.ClientCipher, small_server: crypto.ServerCipher) -> Study:
    profile = small_server.profile
    n = profile.block_size - crypto.DEFAULT_CANARIES
    layout = crypto.build_layout({"w": np.zeros(n + n // 2)}, block_size=profile.block_size)
    limits = crypto.EnvelopeLimits(layout.n_blocks, profile.max_block_bytes, layout.fingerprint)
    initial = crypto.EncryptedModel(
        layout.fingerprint,
        0,
        1,
        tuple(
            crypto.CipherBlock(i, small_client.encrypt_model_block(np.zeros(profile.block_size)))
            for i in range(layout.n_blocks)
        ),
    )
    store = MemoryStore()
    store.save_layout(layout.to_json())
    return Study(small_client, small_server, layout, limits, store, crypto.model_to_bytes(initial))


def expected_noise(study: Study, records: Sequence[UpdateRecord]) -> np.ndarray:
    """The noise the records' seeds draw, computed in the clear the way the server does."""
    n_blocks, block_size = study.layout.zero_mask.shape
    out = np.zeros((n_blocks, block_size))
    for record in records:
        assert record.noise_seed is not None
        for index in range(n_blocks):
            rng = np.random.default_rng([record.noise_seed, index])
            out[index] += rng.normal(0.0, Z * CLIP * record.weight, block_size)
    out[study.layout.zero_mask] = 0.0
    return out


def test_each_applied_update_brings_its_noise_on_parameters_only(study: Study) -> None:
    # Prepare
    state = study.state()
    rows = study.layout.zero_mask.shape
    values = np.where(study.layout.zero_mask, 0.0, 0.01)
    # Execute
    records = [study.apply(state, values * (k + 1), weight=0.5) for k in range(3)]
    model = study.decrypt(state.publish().blocks)
    # Assert: the model is the weighted updates plus each update's own draw, no more
    assert len({r.noise_seed for r in records}) == 3
    want = 0.5 * values * 6 + expected_noise(study, records)
    assert np.abs(model - want).max() < 1e-3
    free = (model - 0.5 * values * 6)[~study.layout.zero_mask]
    assert abs(float(free.std()) - 0.5 * np.sqrt(3)) < 0.05  # z·C·w per update, 3 updates
    assert crypto.check_model(study.layout, study.server.profile, model).check is None
    assert model.shape == rows


def test_with_a_buffer_each_update_brings_its_own_noise_when_the_buffer_is_added(
    study: Study,
) -> None:
    state = study.state()
    zeros = np.zeros(study.layout.zero_mask.shape)
    first = study.apply(state, zeros, weight=1.0, buffer_size=2)
    assert state.version == 0  # buffered: nothing in the model yet
    second = study.apply(state, zeros, weight=0.25, buffer_size=2)

    model = study.decrypt(state.publish().blocks)
    assert np.abs(model - expected_noise(study, [first, second])).max() < 1e-3
    assert state.snapshot.block_versions == (1, 1)  # every block changed


def test_in_a_round_each_update_brings_its_noise_at_its_round_weight(study: Study) -> None:
    # Prepare: a round of two hospitals, 100 and 300 rows (FedAvg weights 1/4 and 3/4)
    state = study.state()
    zeros = np.zeros(study.layout.zero_mask.shape)
    # Execute
    records = [study.apply(state, zeros, 1.0, buffer_size=2, samples=n) for n in (100, 300)]
    model = study.decrypt(state.publish().blocks)
    # Assert: the noise of each at the weight the round gave it, not the provisional one
    weighed = []
    for record in records:
        receipt = state.receipt(record.update_id)
        assert receipt is not None
        weighed.append(replace(record, weight=receipt.weight))
    assert [r.weight for r in weighed] == [0.25, 0.75]
    assert np.abs(model - expected_noise(study, weighed)).max() < 1e-3


def test_recovery_replays_the_same_noise_from_the_logged_seeds(study: Study) -> None:
    # Prepare: the checkpoint of version 0, then three logged updates
    live = study.state()
    study.store.write_checkpoint(live.checkpoint())
    for k in range(3):
        study.apply(live, np.full(study.layout.zero_mask.shape, 0.001 * k), weight=1.0)
    # Execute: a restart (kill -9) rebuilds from the checkpoint and the log
    recovered = recover(
        study.store, InProcessBackend(study.server), JOB, max_staleness=100, privacy=PRIVACY
    )
    # Assert: bit for bit the model the live server had
    assert recovered.state is not None
    assert recovered.state.snapshot.blocks == live.publish().blocks
    # and the counts each hospital's ε is derived from
    counts = {k: v.updates_applied for k, v in recovered.state.tally().clients.items()}
    assert counts == {k: v.updates_applied for k, v in live.tally().clients.items()}
    assert counts == {"c0": 2, "c1": 1}


def test_a_noise_free_twin_differs_by_exactly_the_noise(study: Study) -> None:
    noisy, plain = study.state(), study.state(noise=False)
    values = np.where(study.layout.zero_mask, 0.0, 0.02)
    records = [study.apply(noisy, values, weight=1.0) for _ in range(2)]
    for _ in range(2):
        study.apply(plain, values, weight=1.0)

    gap = study.decrypt(noisy.publish().blocks) - study.decrypt(plain.publish().blocks)
    assert np.abs(gap - expected_noise(study, records)).max() < 1e-3


def test_a_probe_rebuilds_a_past_version_exactly_noise_included(study: Study) -> None:
    state = study.state()
    values = np.where(study.layout.zero_mask, 0.0, 0.01)
    study.apply(state, values, weight=1.0)
    at_one = state.publish().blocks
    records = [study.apply(state, values, weight=0.5) for _ in range(2)]
    state.publish()

    probe = build_probe_model(
        state,
        study.limits,
        ProbeView(1),
        {r.seq: r.envelope for r in records},
        removed=[],
    )
    rebuilt = crypto.model_from_bytes(probe.body, study.limits)
    assert tuple(b.data for b in rebuilt.blocks) == at_one


def test_a_repair_subtracts_the_update_and_leaves_its_noise(study: Study) -> None:
    # Prepare
    state = study.state()
    good = np.where(study.layout.zero_mask, 0.0, 0.01)
    bad = np.where(study.layout.zero_mask, 0.0, 3.0)
    first = study.apply(state, good, weight=1.0)
    removed = study.apply(state, bad, weight=0.5)
    repair = RepairRecord(
        entry=1,
        after_seq=removed.seq,
        version=state.version + 1,
        removed=(RemovedUpdate.of(removed),),
        quarantine={},
        reason="test",
        at=0.0,
        envelopes=(removed.envelope,),
    )
    # Execute
    state.repair(repair, [stage_logged(state, removed.envelope, study.limits)])
    model = study.decrypt(state.publish().blocks)
    # Assert: the bad update is gone, both noises stay (more noise, never less privacy)
    want = good + expected_noise(study, [first, removed])
    assert np.abs(model - want).max() < 1e-3


def test_the_seed_stays_in_the_log_record() -> None:
    record = UpdateRecord(1, uuid.uuid4(), "c", 0, 0, 1.0, 1, True, 0.0, b"", b"", noise_seed=12345)
    assert "12345" not in repr(record)
    assert UpdateRecord.from_header(record.header(), b"").noise_seed == 12345
    assert "noise_seed" not in RemovedUpdate.of(record).to_json()


@pytest.mark.parametrize(("z", "k", "delta"), [(0.5, 1, 1e-5), (1.0, 10, 1e-5), (2.0, 60, 1e-4)])
def test_epsilon_is_opacus_rdp_of_k_gaussian_mechanisms_at_rate_1(
    z: float, k: int, delta: float
) -> None:
    accountant = RDPAccountant()
    for _ in range(k):
        accountant.step(noise_multiplier=z, sample_rate=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = accountant.get_epsilon(delta=delta)

    assert hospital_epsilon(z, k, delta) == pytest.approx(want, rel=1e-12)
    assert hospital_epsilon(z, 0, delta) == 0.0
    assert hospital_epsilon(z, k + 1, delta) > hospital_epsilon(z, k, delta)


def test_the_orders_are_opacus_own() -> None:
    assert list(RDP_ORDERS) == RDPAccountant.DEFAULT_ALPHAS


def test_the_shards_spare_exactly_the_layouts_zero_slots(study: Study) -> None:
    draws = UpdateNoise.for_layout(Z * CLIP, study.layout).draws([])
    size = study.layout.block_size
    rows = [draws.zero_row(i, size) for i in range(study.layout.n_blocks)]
    assert np.array_equal(np.stack(rows), study.layout.zero_mask)
