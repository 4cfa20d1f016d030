"""A hospital during a key rotation of its job: re-encrypts when asked, waits otherwise,
and trains again an update the rotation refused (docs/protocol.md, "Key rotation")."""

from __future__ import annotations

import numpy as np
import pytest

import crypto
from fl_client.errors import JobRotatingError
from fl_client.events import KeyEpochFetched, ModelReencrypted, Rejected, RotationWaiting
from fl_client.rounds.loop import run_round
from tests.fl_client.conftest import MakeContext, Script
from tests.fl_client.fakes import FakeServer


@pytest.fixture(scope="module")
def new_keys(small_profile: crypto.CkksProfile) -> crypto.KeyMaterial:
    return crypto.generate_key_material(small_profile)


@pytest.fixture
def rotating(server: FakeServer, new_keys: crypto.KeyMaterial) -> FakeServer:
    """The server whose keyauth holds epoch 2 as well."""
    server.keyauth.epochs[2] = new_keys
    return server


def another_hospital_reencrypts(
    server: FakeServer, old: crypto.KeyMaterial, new: crypto.KeyMaterial
) -> None:
    """What the hospital the server asked does: decrypt with epoch 1, encrypt with 2."""
    assert server.layout is not None
    assert server.rotation is not None
    profile = crypto.get_profile(old.profile_name)
    values = server.decrypt(crypto.ClientCipher(old.secret_context, profile))
    cipher = crypto.ClientCipher(new.secret_context, profile)
    blocks = tuple(
        crypto.CipherBlock(i, cipher.encrypt_model_block(v)) for i, v in enumerate(values)
    )
    model = crypto.EncryptedModel(server.layout.fingerprint, server.version, 2, blocks)
    server.put_rotated_model(crypto.model_to_bytes(model))


def update_epoch(server: FakeServer, envelope: bytes) -> int:
    assert server.layout is not None
    limits = crypto.EnvelopeLimits(server.layout.n_blocks, server.profile.max_block_bytes)
    return crypto.update_from_bytes(envelope, limits).key_epoch


def test_the_hospital_asked_reencrypts_the_model_then_trains_under_the_new_epoch(
    make_context: MakeContext,
    rotating: FakeServer,
    small_keys: crypto.KeyMaterial,
    new_keys: crypto.KeyMaterial,
    fetched: list[int],
) -> None:
    # Prepare: one round under epoch 1, then the server asks this hospital
    ctx, sink = make_context()
    assert run_round(ctx) is not None
    profile = crypto.get_profile(small_keys.profile_name)
    before = rotating.decrypt(crypto.ClientCipher(small_keys.secret_context, profile))
    rotating.rotate(2, new_keys.key_id, "client-a")

    # Execute
    result = run_round(ctx)

    # Assert: the model moved to epoch 2 whole, and this round's update is under epoch 2
    assert result is not None
    assert (rotating.key_epoch, rotating.key_id, rotating.rotation) == (2, new_keys.key_id, None)
    (reencrypted,) = [e for e in sink.events if isinstance(e, ModelReencrypted)]
    assert (reencrypted.from_epoch, reencrypted.key_epoch, reencrypted.swapped) == (1, 2, True)
    assert reencrypted.version == 1
    assert fetched == [1, 2]
    assert update_epoch(rotating, rotating.uploads[-1]) == 2
    # what this round added is all that changed: the rotation kept the model's values
    rotated = rotating.published[2]
    limits = crypto.EnvelopeLimits(len(before), profile.max_block_bytes)
    new_cipher = crypto.ClientCipher(new_keys.secret_context, profile)
    model = crypto.model_from_bytes(rotated, limits)
    values = np.stack([new_cipher.decrypt_block(b.data) for b in model.blocks])
    assert float(np.max(np.abs(values - before))) < 1e-3


def test_another_hospital_waits_for_the_rotation_then_fetches_the_new_epoch(
    make_context: MakeContext,
    rotating: FakeServer,
    small_keys: crypto.KeyMaterial,
    new_keys: crypto.KeyMaterial,
) -> None:
    ctx, sink = make_context("b")
    assert run_round(ctx) is not None
    rotating.rotate(2, new_keys.key_id, "client-a")
    ctx.sleep = Script(lambda: another_hospital_reencrypts(rotating, small_keys, new_keys))

    result = run_round(ctx)

    assert result is not None
    assert [e for e in sink.events if isinstance(e, RotationWaiting)] == [
        RotationWaiting(job=rotating.name, key_epoch=2, version=1)
    ]
    assert not [e for e in sink.events if isinstance(e, ModelReencrypted)]
    assert KeyEpochFetched(key_epoch=2, profile=small_keys.profile_name) in sink.events
    assert update_epoch(rotating, rotating.uploads[-1]) == 2
    assert rotating.applied == 2


def test_an_update_refused_by_the_rotation_is_dropped_and_trained_again(
    make_context: MakeContext,
    rotating: FakeServer,
    small_keys: crypto.KeyMaterial,
    new_keys: crypto.KeyMaterial,
) -> None:
    # Prepare: the rotation starts while this hospital's update is on its way
    ctx, sink = make_context("b")
    assert run_round(ctx) is not None
    rotating.rotate_at_next_push = (2, new_keys.key_id, "client-a")

    # Execute: the update is refused; the next round waits, then trains under epoch 2
    with pytest.raises(JobRotatingError):
        run_round(ctx)
    refused = ctx.state.load_progress()
    ctx.sleep = Script(lambda: another_hospital_reencrypts(rotating, small_keys, new_keys))
    result = run_round(ctx)

    # Assert: nothing of the refused update was committed; it was trained again
    assert ctx.state.load_pending() is None
    assert [e.code for e in sink.events if isinstance(e, Rejected)] == ["job_rotating"]
    assert refused.rounds == 1
    assert result is not None
    assert result.round == 2
    assert rotating.applied == 2
    assert update_epoch(rotating, rotating.uploads[-1]) == 2
