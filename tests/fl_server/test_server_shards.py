"""The shard backends: one seam, in this process or in worker processes, bit for bit alike."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import crypto
from fl_server.errors import InvalidInputError, StorageError
from fl_server.job_service import JobService
from fl_server.shards import (
    InProcessBackend,
    NoiseDraws,
    ProcessBackend,
    ShardBackend,
    ShardDiedError,
    Staged,
)
from hefl_wire import AccessClaims
from tests.fl_server.helpers import (
    Hospital,
    body_reader,
    push_update,
    start_job,
    wait_published,
)

N_BLOCKS = 5


@pytest.fixture(scope="module")
def process_backend(
    small_keys: crypto.KeyMaterial, small_profile: crypto.CkksProfile
) -> Iterator[ProcessBackend]:
    backend = ProcessBackend(small_keys.public_context, small_profile, 2)
    yield backend
    backend.close()


def _rows(profile: crypto.CkksProfile, seed: int, scale: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.normal(0, scale, (N_BLOCKS, profile.block_size)))


def _model(client: crypto.ClientCipher, profile: crypto.CkksProfile) -> list[bytes]:
    return [client.encrypt_model_block(v) for v in _rows(profile, 0, 0.1)]


def _update(client: crypto.ClientCipher, profile: crypto.CkksProfile, seed: int) -> list[bytes]:
    return [client.encrypt_update_block(v) for v in _rows(profile, seed, 0.01)]


def _install(backend: ShardBackend, model: list[bytes]) -> None:
    backend.open(len(model))
    backend.install(backend.stage(enumerate(model), model=True))


def _decrypt(client: crypto.ClientCipher, blocks: list[bytes]) -> np.ndarray:
    return np.stack([client.decrypt_block(b) for b in blocks])


def test_worker_processes_compute_what_one_process_computes_bit_for_bit(
    process_backend: ProcessBackend,
    small_server: crypto.ServerCipher,
    small_client: crypto.ClientCipher,
    small_profile: crypto.CkksProfile,
) -> None:
    # Prepare: one model, and updates of some blocks each (blocks 1..3 cross the shards).
    model = _model(small_client, small_profile)
    updates = [_update(small_client, small_profile, seed) for seed in (1, 2, 3)]
    parts = [[0, 1, 2, 3, 4], [1, 2, 3], [4]]
    weights = [0.5, 0.25, 1.0]
    results = []

    # Execute: the same calls, in the same order, on both backends.
    for backend in (InProcessBackend(small_server), process_backend):
        _install(backend, model)
        for update, part, weight in zip(updates, parts, weights, strict=True):
            backend.buffer(backend.stage((i, update[i]) for i in part), weight)
            if part == [1, 2, 3]:
                backend.flush()
        backend.flush()
        results.append(backend.serialize(range(N_BLOCKS)))

    # Assert: identical ciphertexts, and the sum the weights make.
    assert results[0] == results[1]
    expected = np.stack(_rows(small_profile, 0, 0.1))
    for update_seed, part, weight in zip((1, 2, 3), parts, weights, strict=True):
        rows = np.stack(_rows(small_profile, update_seed, 0.01))
        expected[part] += weight * rows[part]
    assert np.allclose(_decrypt(small_client, results[1]), expected, atol=1e-4)


def test_noise_is_drawn_per_block_alike_on_every_shard_and_a_probe_takes_it_out(
    process_backend: ProcessBackend,
    small_server: crypto.ServerCipher,
    small_client: crypto.ClientCipher,
    small_profile: crypto.CkksProfile,
) -> None:
    # Prepare: two draws; parameters end a third of the way into the last block
    model = _model(small_client, small_profile)
    slots = small_profile.block_size - crypto.DEFAULT_CANARIES
    noise = NoiseDraws(((7, 0.5), (2**100 + 3, 0.25)), slots, slots * 4 + slots // 3)
    results, probes = [], []

    # Execute: the same noise on both backends, then a copy without it
    for backend in (InProcessBackend(small_server), process_backend):
        _install(backend, model)
        backend.noise(noise)
        results.append(backend.serialize(range(N_BLOCKS)))
        probes.append(backend.probe([], [], noise))

    # Assert: identical ciphertexts; noise of the drawn size on parameter slots only
    assert results[0] == results[1]
    assert probes[0] == probes[1]
    added = _decrypt(small_client, results[1]) - np.stack(_rows(small_profile, 0, 0.1))
    mask = np.stack([noise.zero_row(i, small_profile.block_size) for i in range(N_BLOCKS)])
    assert mask[:, slots:].all()
    assert mask[4, slots // 3 : slots].all()
    assert not mask[4, : slots // 3].any()
    assert np.abs(added[mask]).max() < 1e-4
    assert 0.45 < float(added[~mask].std()) < 0.67  # sqrt(0.5² + 0.25²) = 0.56
    removed = _decrypt(small_client, probes[1])
    assert np.allclose(removed, np.stack(_rows(small_profile, 0, 0.1)), atol=1e-4)
    # a one-block model leaves the first of the two shards without blocks: nothing to noise
    _install(process_backend, model[:1])
    process_backend.noise(noise)
    assert len(process_backend.probe([], [], noise)) == 1


def test_a_bad_block_in_one_shard_leaves_every_shard_untouched(
    process_backend: ProcessBackend,
    small_client: crypto.ClientCipher,
    small_profile: crypto.CkksProfile,
) -> None:
    # Prepare: an update whose last block (owned by the second shard) is a model block.
    model = _model(small_client, small_profile)
    _install(process_backend, model)
    update = _update(small_client, small_profile, 1)
    bad = [*update[:-1], small_client.encrypt_model_block(np.zeros(small_profile.block_size))]

    # Execute
    with pytest.raises(crypto.CiphertextError):
        process_backend.stage(enumerate(bad))
    good = process_backend.stage(enumerate(update))
    process_backend.buffer(good, 1.0)
    process_backend.flush()

    # Assert: the model holds the good update only; the first shard's part of the bad one
    # was never added.
    expected = np.stack(_rows(small_profile, 0, 0.1)) + np.stack(_rows(small_profile, 1, 0.01))
    blocks = process_backend.serialize(range(N_BLOCKS))
    assert np.allclose(_decrypt(small_client, blocks), expected, atol=1e-4)


def test_repairs_and_probes_take_back_exactly_what_was_added(
    process_backend: ProcessBackend,
    small_client: crypto.ClientCipher,
    small_profile: crypto.CkksProfile,
) -> None:
    # Prepare
    _install(process_backend, _model(small_client, small_profile))
    initial = process_backend.serialize(range(N_BLOCKS))
    update = _update(small_client, small_profile, 1)
    process_backend.buffer(process_backend.stage(enumerate(update)), 0.5)
    process_backend.flush()
    added = process_backend.serialize(range(N_BLOCKS))

    # Execute: a probe rebuilds the model before the update; a repair removes it.
    staged: Staged = process_backend.stage(enumerate(update))
    probe = process_backend.probe([(staged, 0.5)], [])
    after_probe = process_backend.serialize(range(N_BLOCKS))
    process_backend.subtract(process_backend.stage(enumerate(update)), 0.5)
    repaired = process_backend.serialize(range(N_BLOCKS))

    # Assert: bit for bit the initial model each time, and the probe left the model alone.
    assert probe == initial
    assert after_probe == added
    assert repaired == initial


class _CountedSource:
    """A ``BlockSource`` that counts its reads and says whether it was closed."""

    def __init__(self, blocks: list[tuple[int, bytes]]) -> None:
        self._blocks = blocks
        self.indices = [i for i, _ in blocks]
        self.nbytes = sum(len(b) for _, b in blocks)
        self.reads = 0
        self.closed = False

    def read(self, position: int) -> bytes:
        assert not self.closed
        self.reads += 1
        return self._blocks[position][1]

    def close(self) -> None:
        self.closed = True


def test_streamed_updates_are_read_twice_and_add_what_held_ones_add_bit_for_bit(
    small_keys: crypto.KeyMaterial,
    small_server: crypto.ServerCipher,
    small_client: crypto.ClientCipher,
    small_profile: crypto.CkksProfile,
) -> None:
    # Prepare: backends that hold every update loaded, and backends that stream them all
    model = _model(small_client, small_profile)
    updates = [_update(small_client, small_profile, seed) for seed in (1, 2, 3)]
    process = [
        ProcessBackend(small_keys.public_context, small_profile, 2, stream_above=limit)
        for limit in (1 << 40, 0)
    ]
    backends: list[ShardBackend] = [
        InProcessBackend(small_server, stream_above=1 << 40),
        InProcessBackend(small_server, stream_above=0),
        *process,
    ]
    results, probes, sources = [], [], []
    try:
        # Execute: buffered, added straight in, a round of two, a probe and a repair
        for backend in backends:
            _install(backend, model)
            first = _CountedSource([(i, updates[0][i]) for i in (1, 2, 3)])
            staged = backend.stage(first)
            backend.buffer(staged, 0.5)
            backend.add(backend.stage(enumerate(updates[1])), 0.25)
            backend.flush()
            probe = backend.stage(enumerate(updates[1]))
            probes.append(backend.probe([(probe, 0.25)], []))
            backend.subtract(backend.stage(enumerate(updates[1])), 0.25)
            last = backend.stage(enumerate(updates[2]))
            backend.add(last, 1.0)
            results.append(backend.serialize(range(N_BLOCKS)))
            sources.append((first, staged, last))
    finally:
        for backend in process:
            backend.close()

    # Assert: every backend made the same ciphertexts; streamed sources were read twice
    # and closed once consumed, held ones read once and closed at once
    assert all(r == results[0] for r in results)
    assert all(p == probes[0] for p in probes)
    for (first, staged, last), streams in zip(sources, (False, True, False, True), strict=True):
        assert first.closed
        assert first.reads == (6 if streams else 3)
        assert (staged.source is not None) == streams
        assert (last.source is not None) == streams
    expected = np.stack(_rows(small_profile, 0, 0.1))
    expected[[1, 2, 3]] += 0.5 * np.stack(_rows(small_profile, 1, 0.01))[[1, 2, 3]]
    expected += np.stack(_rows(small_profile, 3, 0.01))
    assert np.allclose(_decrypt(small_client, results[0]), expected, atol=1e-4)


@pytest.mark.parametrize("shards", [0, 2])
def test_a_bad_block_refuses_a_streamed_update_before_anything_is_added(
    shards: int,
    small_keys: crypto.KeyMaterial,
    small_server: crypto.ServerCipher,
    small_client: crypto.ClientCipher,
    small_profile: crypto.CkksProfile,
) -> None:
    # Prepare: streaming backends; an update whose last block is a model block
    backend: ShardBackend = (
        ProcessBackend(small_keys.public_context, small_profile, shards, stream_above=0)
        if shards
        else InProcessBackend(small_server, stream_above=0)
    )
    try:
        _install(backend, _model(small_client, small_profile))
        update = _update(small_client, small_profile, 1)
        bad = [*update[:-1], small_client.encrypt_model_block(np.zeros(small_profile.block_size))]
        source = _CountedSource(list(enumerate(bad)))

        # Execute
        with pytest.raises(crypto.CiphertextError):
            backend.stage(source)
        backend.add(backend.stage(enumerate(update)), 1.0)

        # Assert: the good update only, and the refused source closed
        assert source.closed
        expected = np.stack(_rows(small_profile, 0, 0.1)) + np.stack(_rows(small_profile, 1, 0.01))
        blocks = backend.serialize(range(N_BLOCKS))
        assert np.allclose(_decrypt(small_client, blocks), expected, atol=1e-4)
    finally:
        backend.close()


def test_a_dead_worker_is_reported_not_waited_for(
    small_keys: crypto.KeyMaterial,
    small_client: crypto.ClientCipher,
    small_profile: crypto.CkksProfile,
) -> None:
    # Prepare: a backend of its own, one of whose workers is killed.
    backend = ProcessBackend(small_keys.public_context, small_profile, 2)
    try:
        _install(backend, _model(small_client, small_profile))
        pid = backend.pids[1]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        # Execute / Assert: the next call and every later one raise at once.
        with pytest.raises(ShardDiedError, match="is gone"):
            backend.stage(enumerate(_update(small_client, small_profile, 1)))
        with pytest.raises(ShardDiedError):
            backend.serialize(range(N_BLOCKS))
    finally:
        backend.close()


# -- a job on shards ----------------------------------------------------------------------


def _with_bad_last_block(hospital: Hospital, values: np.ndarray) -> bytes:
    """An update whose last block (the second shard's) is a model-scale ciphertext."""
    blocks = [
        crypto.CipherBlock(i, hospital.cipher.encrypt_update_block(v)) for i, v in enumerate(values)
    ]
    last = len(blocks) - 1
    blocks[last] = crypto.CipherBlock(last, hospital.cipher.encrypt_model_block(values[last]))
    update = crypto.EncryptedUpdate(
        hospital.layout.fingerprint, 0, hospital.key_epoch, uuid.uuid4(), tuple(blocks)
    )
    return crypto.update_to_bytes(update)


@pytest.mark.anyio
async def test_a_job_on_two_shards_serves_the_model_one_process_serves(
    make_job: Callable[..., JobService],
    tmp_path: Path,
    hospital: Hospital,
    client: AccessClaims,
) -> None:
    # Prepare: the same job twice, on two shards and in this process (buffer of 2).
    jobs = [
        make_job(tmp_path / f"state-{shards}", shards=shards, buffer_size=2) for shards in (2, 0)
    ]
    initial = hospital.random_values(0, scale=0.5)
    model = hospital.initial_model(initial)  # encrypted once: both start from the same bytes
    updates = [hospital.update(hospital.random_values(k), base_version=0)[1] for k in (1, 2, 3)]
    bad = _with_bad_last_block(hospital, hospital.random_values(9))

    # Execute: a refused update between good ones, on both.
    for job in jobs:
        await job.receive_layout(client, body_reader(hospital.layout.to_json()))
        await job.receive_initial_model(client, body_reader(model))
        await push_update(job, client, updates[0])
        with pytest.raises(InvalidInputError):
            await push_update(job, client, bad)
        for envelope in updates[1:]:
            await push_update(job, client, envelope)
        wait_published(job)

    # Assert: byte for byte the same model; the bad update's first blocks are in neither.
    sharded, local = (job.snapshot().to_bytes() for job in jobs)
    assert sharded == local
    version, values = hospital.decrypt_model(sharded)
    assert version == 1  # three updates in buffers of two: the third waits in the buffer
    expected = initial + hospital.random_values(1) + hospital.random_values(2)
    assert np.max(np.abs(values - expected)) <= hospital.profile.error_bound(3)


@pytest.mark.anyio
async def test_a_dead_shard_fails_the_job_with_storage_failed_not_a_hang(
    make_job: Callable[..., JobService], hospital: Hospital, client: AccessClaims
) -> None:
    # Prepare: a started job on two shards, one of whose workers is killed.
    job = make_job(shards=2)
    await start_job(job, client, hospital)
    await push_update(job, client, hospital.update(hospital.random_values(1), base_version=0)[1])
    wait_published(job)
    served = job.snapshot().to_bytes()
    backend = job._backend  # the test reaches in: nothing else may kill a worker
    assert isinstance(backend, ProcessBackend)
    pid = backend.pids[0]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    # Execute / Assert: this update and the next are refused 503, at once.
    for seed in (2, 3):
        envelope = hospital.update(hospital.random_values(seed), base_version=1)[1]
        with pytest.raises(StorageError) as refused:
            await asyncio.wait_for(push_update(job, client, envelope), timeout=60)
        assert refused.value.http_status == 503
    assert job.snapshot().to_bytes() == served  # downloads keep the published model
