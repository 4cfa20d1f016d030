"""The integrity checks on real decrypted models: honest, bit-flipped, under another key, NaN."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

import crypto
from crypto import ClientCipher, IntegrityCheck, KeyMaterial, ModelLayout, ServerCipher
from harness.corpus import _with_scale  # forges a ciphertext scale crypto/ would never write

# Two blocks of the test profile: 2 x 2044 parameter slots for 4000 parameters, so the
# last block has 88 slots of padding before its 4 canaries.
_TENSORS = {"a": np.zeros(3000, np.float32), "b": np.zeros((40, 25), np.float32)}
_FLIPS = 48


@pytest.fixture(scope="module")
def layout(small_profile: crypto.CkksProfile) -> ModelLayout:
    return crypto.build_layout(_TENSORS, small_profile.block_size)


def _model_values(layout: ModelLayout, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tensors = {s.name: rng.normal(0, 0.4, s.shape) for s in layout.tensors}
    return layout.flatten(tensors)


def _update_values(layout: ModelLayout, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return layout.flatten({s.name: rng.normal(0, 0.01, s.shape) for s in layout.tensors})


def _served_model(
    client: ClientCipher, server: ServerCipher, layout: ModelLayout, additions: int
) -> list[crypto.EncryptedBlock]:
    """The server's model after ``additions`` honest weighted updates."""
    model = [
        server.load_model_block(client.encrypt_model_block(v)) for v in _model_values(layout, 0)
    ]
    for k in range(additions):
        for block, values in zip(model, _update_values(layout, 100 + k), strict=True):
            server.add_weighted(
                block, server.load_update_block(client.encrypt_update_block(values)), 0.5
            )
    return model


def _decrypt(
    client: ClientCipher, server: ServerCipher, model: list[crypto.EncryptedBlock]
) -> np.ndarray:
    return np.stack([client.decrypt_block(server.block_to_bytes(b)) for b in model])


def _check(
    client: ClientCipher,
    server: ServerCipher,
    layout: ModelLayout,
    model: list[crypto.EncryptedBlock],
) -> IntegrityCheck:
    return crypto.check_model(layout, client.profile, _decrypt(client, server, model))


def test_an_honest_model_passes_after_many_additions(
    small_client: ClientCipher, small_server: ServerCipher, layout: ModelLayout
) -> None:
    # Prepare
    model = _served_model(small_client, small_server, layout, additions=50)

    # Execute
    result = _check(small_client, small_server, layout, model)

    # Assert
    assert result.ok
    assert result.check is None
    assert result.blocks == ()
    assert result.max_abs is not None
    assert 0.5 < result.max_abs < 5


def test_an_honest_canary_stays_far_inside_its_tolerance(
    small_client: ClientCipher, small_server: ServerCipher, layout: ModelLayout
) -> None:
    model = _served_model(small_client, small_server, layout, additions=50)

    values = _decrypt(small_client, small_server, model)

    canaries = np.abs(values[layout.zero_mask]).max()
    assert canaries < small_client.profile.canary_tolerance / 100


def _flipped(data: bytes, rng: random.Random) -> bytes:
    """One bit flipped at a random position after SEAL's 16-byte header."""
    raw = bytearray(data)
    at = rng.randrange(16, len(raw))
    raw[at] ^= 1 << rng.randrange(8)
    return bytes(raw)


def flip_table(
    client: ClientCipher, server: ServerCipher, layout: ModelLayout, flips: int, seed: int
) -> tuple[Counter[str], list[IntegrityCheck]]:
    """``flips`` updates each with one flipped bit in block 0, as a server would take them:
    how many SEAL refuses to load, and the checks of the model each accepted one makes."""
    rng = random.Random(seed)
    update = _update_values(layout, 7)
    counts: Counter[str] = Counter()
    results = []
    for _ in range(flips):
        model = _served_model(client, server, layout, additions=0)
        bad = _flipped(client.encrypt_update_block(update[0]), rng)
        try:
            block = server.load_update_block(bad)
        except crypto.CiphertextError:
            counts["refused at load"] += 1
            continue
        server.add_weighted(model[0], block, 1.0)
        result = _check(client, server, layout, model)
        results.append(result)
        counts["accepted"] += 1
        counts.update(result.failures.keys())
        counts["missed"] += result.ok
    return counts, results


def test_one_flipped_bit_in_an_update_is_caught_in_its_block_by_range_and_canary(
    small_client: ClientCipher, small_server: ServerCipher, layout: ModelLayout
) -> None:
    # Execute
    counts, results = flip_table(small_client, small_server, layout, _FLIPS, seed=13)

    # Assert: most flips get through SEAL's parser, as they get through fl_server; every
    # one that does is caught, in block 0 only, by range and by the canaries
    assert counts["accepted"] + counts["refused at load"] == _FLIPS
    assert counts["accepted"] >= _FLIPS // 2
    assert counts["missed"] == 0
    for result in results:
        assert result.blocks == (0,)
        assert result.failures.get("range") == (0,)
        assert result.failures.get("canary") == (0,)
        assert result.check == "range"
        assert result.max_abs is not None
        assert result.max_abs > 100


def test_a_block_under_another_key_of_the_same_profile_is_caught(
    small_client: ClientCipher,
    small_server: ServerCipher,
    small_keys: KeyMaterial,
    layout: ModelLayout,
) -> None:
    # Prepare: another key authority's key; its keyless context is the same bytes
    other_keys = crypto.generate_key_material(small_client.profile)
    other = ClientCipher(other_keys.secret_context, small_client.profile)
    assert other_keys.public_context == small_keys.public_context
    model = _served_model(small_client, small_server, layout, additions=2)
    update = _update_values(layout, 8)

    # Execute: the server takes the update like any other
    block = small_server.load_update_block(other.encrypt_update_block(update[1]))
    small_server.add_weighted(model[1], block, 0.25)
    result = _check(small_client, small_server, layout, model)

    # Assert
    assert result.check == "range"
    assert result.blocks == (1,)
    assert result.failures == {"range": (1,), "canary": (1,)}


@pytest.mark.parametrize(
    ("scale", "check"), [(1e-300, "finite"), (1e-30, "range")], ids=["NaN and inf", "1e38"]
)
def test_a_block_decrypting_to_nan_inf_or_float32_overflow_is_caught(
    small_client: ClientCipher,
    small_server: ServerCipher,
    small_keys: KeyMaterial,
    layout: ModelLayout,
    scale: float,
    check: str,
) -> None:
    # Prepare: a served model block whose scale field was forged
    model = _served_model(small_client, small_server, layout, additions=1)
    blocks = [small_server.block_to_bytes(b) for b in model]
    blocks[0] = _with_scale(small_keys.secret_context, blocks[0], scale)

    # Execute
    values = np.stack([small_client.decrypt_block(b) for b in blocks])
    result = crypto.check_model(layout, small_client.profile, values)

    # Assert
    assert result.check == check
    assert result.blocks == (0,)


def test_a_drifted_canary_alone_fails_the_canary_check(
    small_profile: crypto.CkksProfile, layout: ModelLayout
) -> None:
    # Prepare: values within range, but one canary and one padding slot off zero
    values = _model_values(layout, 1)
    canary = np.flatnonzero(layout.zero_mask[0])[-1]
    padding = np.flatnonzero(layout.zero_mask[1])[0]
    values[0, canary] = 5.0
    values[1, padding] = -2.0

    # Execute
    result = crypto.check_model(layout, small_profile, values)

    # Assert
    assert result.check == "canary"
    assert result.blocks == (0, 1)
    assert result.failures == {"canary": (0, 1)}


def test_checks_are_reported_in_order_and_blocks_are_their_union(
    small_profile: crypto.CkksProfile, layout: ModelLayout
) -> None:
    values = _model_values(layout, 2)
    values[1, 5] = np.nan
    values[0, 3] = 1e4

    result = crypto.check_model(layout, small_profile, values)

    assert result.check == "finite"
    assert result.blocks == (0, 1)
    assert result.failures == {"finite": (1,), "range": (0,)}
    assert result.max_abs == 1e4


def test_a_model_of_nothing_finite_has_no_largest_magnitude(
    small_profile: crypto.CkksProfile, layout: ModelLayout
) -> None:
    values = np.full((layout.n_blocks, layout.block_size), np.inf)

    result = crypto.check_model(layout, small_profile, values)

    assert result.check == "finite"
    assert result.max_abs is None


def test_values_of_another_shape_are_a_layout_error(
    small_profile: crypto.CkksProfile, layout: ModelLayout
) -> None:
    with pytest.raises(crypto.LayoutError, match="expected"):
        crypto.check_model(layout, small_profile, np.zeros((1, layout.block_size)))
    with pytest.raises(crypto.LayoutError, match="profile"):
        crypto.check_model(layout, crypto.DEFAULT_PROFILE, np.zeros((2, layout.block_size)))


def test_a_block_seal_cannot_decode_is_a_ciphertext_error(
    small_client: ClientCipher, small_keys: KeyMaterial
) -> None:
    data = _with_scale(small_keys.secret_context, small_client.encrypt_model_block([0.5]), np.nan)

    with pytest.raises(crypto.CiphertextError, match="could not be decrypted"):
        small_client.decrypt_block(data)
