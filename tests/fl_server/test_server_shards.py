"""The shard backends: one seam, in this process or in worker processes, bit for bit alike."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

import crypto
from fl_server.shards import (
    InProcessBackend,
    ProcessBackend,
    ShardBackend,
    ShardDiedError,
    Staged,
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
