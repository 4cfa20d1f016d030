import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crypto
from crypto import (
    CiphertextError,
    ClientCipher,
    ContextError,
    KeyMaterial,
    ServerCipher,
    ValueRangeError,
)


@pytest.fixture(scope="module")
def default_keys() -> KeyMaterial:
    return crypto.generate_key_material(crypto.DEFAULT_PROFILE)


def test_public_context_is_keyless_and_tiny(small_keys: KeyMaterial) -> None:
    assert len(small_keys.public_context) < 200
    assert len(small_keys.secret_context) > 10 * len(small_keys.public_context)


def test_server_refuses_a_context_holding_the_secret_key(
    small_keys: KeyMaterial, small_profile: crypto.CkksProfile
) -> None:
    with pytest.raises(ContextError, match="secret key"):
        ServerCipher(small_keys.secret_context, small_profile)


def test_client_refuses_a_keyless_context(
    small_keys: KeyMaterial, small_profile: crypto.CkksProfile
) -> None:
    with pytest.raises(ContextError, match="no secret key"):
        ClientCipher(small_keys.public_context, small_profile)


def test_garbage_and_mismatched_contexts_are_context_errors(
    small_keys: KeyMaterial, small_profile: crypto.CkksProfile
) -> None:
    with pytest.raises(ContextError, match="parsed"):
        ServerCipher(b"not a context", small_profile)
    with pytest.raises(ContextError, match="does not match"):
        ServerCipher(small_keys.public_context, crypto.DEFAULT_PROFILE)


def test_update_round_trip_is_within_the_stated_error(
    small_client: ClientCipher, small_profile: crypto.CkksProfile
) -> None:
    values = np.random.default_rng(1).normal(0, 0.1, small_profile.block_size)
    out = small_client.decrypt_block(small_client.encrypt_update_block(values))
    assert out.shape == (small_profile.block_size,)
    assert np.max(np.abs(out - values)) < small_profile.error_bound(1)


def test_short_blocks_are_zero_padded(
    small_client: ClientCipher, small_profile: crypto.CkksProfile
) -> None:
    out = small_client.decrypt_block(small_client.encrypt_update_block([1.0, -2.0, 3.0]))
    assert np.allclose(out[:3], [1.0, -2.0, 3.0], atol=small_profile.error_bound(1))
    assert np.max(np.abs(out[3:])) < small_profile.error_bound(1)


def test_dense_update_costs_about_eight_bytes_per_parameter(default_keys: KeyMaterial) -> None:
    profile = crypto.DEFAULT_PROFILE
    client = ClientCipher(default_keys.secret_context, profile)
    values = np.random.default_rng(2).normal(0, 0.01, profile.block_size)
    data = client.encrypt_update_block(values)
    assert len(data) / profile.block_size <= 8.5


@pytest.fixture(scope="module")
def compact() -> tuple[ClientCipher, ServerCipher]:
    profile = crypto.get_profile("n2048-s26")
    keys = crypto.generate_key_material(profile)
    return ClientCipher(keys.secret_context, profile), ServerCipher(keys.public_context, profile)


def test_the_compact_profile_costs_three_quarters_of_the_default_bytes(
    default_keys: KeyMaterial, compact: tuple[ClientCipher, ServerCipher]
) -> None:
    # Prepare: a block of update-sized values under each profile
    client, server = compact
    default = ClientCipher(default_keys.secret_context, crypto.DEFAULT_PROFILE)
    rng = np.random.default_rng(5)
    dense_update = default.encrypt_update_block(rng.normal(0, 0.01, 4096))

    # Execute: an update block and the model block it becomes at the server
    update = client.encrypt_update_block(rng.normal(0, 0.01, client.profile.block_size))
    model = server.load_model_block(client.encrypt_model_block(np.zeros(2048)))
    server.add_weighted(model, server.load_update_block(update), 0.5)
    served = server.block_to_bytes(model)

    # Assert: SEAL's zstd packs the 40-bit prime's coefficients into about 6 of 8 bytes
    per_value = len(update) / 2048
    assert per_value <= 6.2
    assert per_value <= 0.77 * len(dense_update) / 4096
    assert len(served) / 2048 <= 12.2


def _weighted_sum_error(client: ClientCipher, server: ServerCipher, n: int, seed: int) -> float:
    """Max error of ``n`` weighted additions (weights in [0.05, 1]) against the plaintext."""
    profile = client.profile
    rng = np.random.default_rng(seed)
    start = rng.normal(0, 0.5, profile.block_size)
    model = server.load_model_block(client.encrypt_model_block(start))
    expected = start.copy()
    for _ in range(n):
        update = rng.normal(0, 0.01, profile.block_size)
        weight = float(rng.uniform(0.05, 1.0))
        block = server.load_update_block(client.encrypt_update_block(update))
        server.add_weighted(model, block, weight)
        expected += profile.applied_weight(weight) * update
    out = client.decrypt_block(server.block_to_bytes(model))
    return float(np.max(np.abs(out - expected)))


def test_compact_weighted_additions_match_the_plaintext_sum(
    compact: tuple[ClientCipher, ServerCipher],
) -> None:
    client, server = compact
    profile = client.profile
    assert _weighted_sum_error(client, server, 300, seed=6) < profile.error_bound(300)
    # the model holds values up to max_magnitude; one more is refused at encryption
    client.encrypt_model_block([profile.max_magnitude])
    with pytest.raises(ValueRangeError, match="exceeds"):
        client.encrypt_model_block([profile.max_magnitude * 1.01])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([0.0, np.nan], "finite"),
        ([np.inf], "finite"),
        ([1e6], "exceeds"),
        (np.zeros(5000), "exceeds"),
    ],
)
def test_values_the_profile_cannot_hold_are_refused(
    small_client: ClientCipher, values: object, message: str
) -> None:
    with pytest.raises(ValueRangeError, match=message):
        small_client.encrypt_update_block(values)  # type: ignore[arg-type]


def test_server_weighted_additions_match_the_plaintext_sum(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    error = _weighted_sum_error(small_client, small_server, 200, seed=3)
    assert error < small_profile.error_bound(200)


def test_weighting_an_update_uses_no_modulus_level(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    # A weighted update must be serializable and loadable again as a model block:
    # same level, model scale.
    values = np.full(small_profile.block_size, 0.25)
    block = small_server.load_update_block(small_client.encrypt_update_block(values))
    weighted = small_server.weight_update(block, 0.5)
    reloaded = small_server.load_model_block(small_server.block_to_bytes(weighted))
    out = small_client.decrypt_block(small_server.block_to_bytes(reloaded))
    assert np.allclose(out, 0.125, atol=small_profile.error_bound(1))


def test_a_weight_that_rounds_to_zero_is_refused(
    small_client: ClientCipher, small_server: ServerCipher
) -> None:
    block = small_server.load_update_block(small_client.encrypt_update_block([0.1]))
    with pytest.raises(ValueError, match="rounds to zero"):
        small_server.weight_update(block, 1e-6)


def test_scales_are_checked_on_load(small_client: ClientCipher, small_server: ServerCipher) -> None:
    model_bytes = small_client.encrypt_model_block([0.1])
    update_bytes = small_client.encrypt_update_block([0.1])
    with pytest.raises(CiphertextError, match="scale"):
        small_server.load_update_block(model_bytes)
    with pytest.raises(CiphertextError, match="scale"):
        small_server.load_model_block(update_bytes)


def test_ciphertext_of_another_parameter_set_is_refused(
    default_keys: KeyMaterial, small_server: ServerCipher
) -> None:
    other = ClientCipher(default_keys.secret_context, crypto.DEFAULT_PROFILE)
    with pytest.raises(CiphertextError):
        small_server.load_update_block(other.encrypt_update_block([0.1]))


def test_a_weighted_block_cannot_be_weighted_again(
    small_client: ClientCipher, small_server: ServerCipher
) -> None:
    block = small_server.load_update_block(small_client.encrypt_update_block([0.1]))
    small_server.weight_update(block, 1.0)
    with pytest.raises(CiphertextError, match="unweighted"):
        small_server.weight_update(block, 1.0)


@pytest.fixture(scope="module")
def valid_update_bytes(small_client: ClientCipher) -> bytes:
    return small_client.encrypt_update_block(np.linspace(-1, 1, 100))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mangled_ciphertexts_raise_ciphertext_errors_only(
    small_server: ServerCipher, valid_update_bytes: bytes, data: st.DataObject
) -> None:
    raw = bytearray(valid_update_bytes)
    how = data.draw(st.sampled_from(["truncate", "flip", "random", "header"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif how == "header":
        raw[data.draw(st.integers(0, 63))] = data.draw(st.integers(0, 255))
    else:
        raw = bytearray(data.draw(st.binary(max_size=512)))
    with contextlib.suppress(CiphertextError):
        small_server.load_update_block(bytes(raw))


def test_ten_thousand_additions_stay_within_one_millionth(default_keys: KeyMaterial) -> None:
    # The default profile's promise for an add-only server (DESIGN.md): 10,000 updates
    # drawn from N(0, 0.01) accumulate to the plaintext sum within 1e-6.
    profile = crypto.DEFAULT_PROFILE
    client = ClientCipher(default_keys.secret_context, profile)
    server = ServerCipher(default_keys.public_context, profile)
    rng = np.random.default_rng(4)
    model = server.load_model_block(client.encrypt_model_block(np.zeros(profile.block_size)))
    expected = np.zeros(profile.block_size)
    for _ in range(10_000):
        update = rng.normal(0, 0.01, profile.block_size)
        server.add_weighted(model, server.load_update_block(client.encrypt_update_block(update)), 1)
        expected += update
    out = client.decrypt_block(server.block_to_bytes(model))
    assert np.max(np.abs(out - expected)) < 1e-6


def _weighted_history(
    client: ClientCipher, server: ServerCipher, profile: crypto.CkksProfile, n: int, seed: int
) -> tuple[crypto.EncryptedBlock, list[bytes], list[tuple[bytes, float]]]:
    """A model block and ``n`` weighted updates added to it: the model, the serialized
    model after each version (0..n), and each update's bytes with its weight."""
    rng = np.random.default_rng(seed)
    model = server.load_model_block(
        client.encrypt_model_block(rng.normal(0, 0.4, profile.block_size))
    )
    versions = [server.block_to_bytes(model)]
    updates = []
    for _ in range(n):
        data = client.encrypt_update_block(rng.normal(0, 0.01, profile.block_size))
        weight = float(rng.uniform(0.05, 1.0))
        server.add_weighted(model, server.load_update_block(data), weight)
        versions.append(server.block_to_bytes(model))
        updates.append((data, weight))
    return model, versions, updates


def test_subtracting_an_added_update_gives_the_ciphertext_back_bit_for_bit(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    # Prepare
    model, versions, [(data, weight)] = _weighted_history(
        small_client, small_server, small_profile, 1, seed=5
    )

    # Execute: the same bytes loaded again, the same weight
    small_server.subtract_weighted(model, small_server.load_update_block(data), weight)

    # Assert
    assert small_server.block_to_bytes(model) == versions[0]


def test_subtracting_later_updates_rebuilds_an_older_version_exactly(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    # Prepare: versions 0..6
    model, versions, updates = _weighted_history(
        small_client, small_server, small_profile, 6, seed=6
    )

    # Execute: remove the updates of versions 6, 5, 4 and 3
    for data, weight in reversed(updates[2:]):
        small_server.subtract_weighted(model, small_server.load_update_block(data), weight)

    # Assert
    assert small_server.block_to_bytes(model) == versions[2]


def test_removing_one_update_from_the_middle_keeps_the_others_exactly(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    # Prepare: versions 0..4, and the same history without update 2 (index 1)
    model, _, updates = _weighted_history(small_client, small_server, small_profile, 4, seed=7)
    rng = np.random.default_rng(7)
    clean = small_server.load_model_block(
        small_client.encrypt_model_block(rng.normal(0, 0.4, small_profile.block_size))
    )
    for i, (data, weight) in enumerate(updates):
        if i != 1:
            small_server.add_weighted(clean, small_server.load_update_block(data), weight)

    # Execute
    data, weight = updates[1]
    small_server.subtract_weighted(model, small_server.load_update_block(data), weight)

    # Assert: the same plaintext within the noise of one fresh model encryption (the two
    # initial models are two encryptions of the same values, so not the same bytes)
    out = small_client.decrypt_block(small_server.block_to_bytes(model))
    expected = small_client.decrypt_block(small_server.block_to_bytes(clean))
    assert np.max(np.abs(out - expected)) < small_profile.error_bound(8)


def test_subtracting_at_another_weight_does_not_restore_the_model(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    model, versions, [(data, weight)] = _weighted_history(
        small_client, small_server, small_profile, 1, seed=8
    )
    other = weight / 2 if weight > 0.2 else weight * 2
    assert small_profile.quantize_weight(other) != small_profile.quantize_weight(weight)

    small_server.subtract_weighted(model, small_server.load_update_block(data), other)

    assert small_server.block_to_bytes(model) != versions[0]


def test_subtraction_takes_model_scale_blocks_only(
    small_client: ClientCipher, small_server: ServerCipher
) -> None:
    model = small_server.load_model_block(small_client.encrypt_model_block([0.1]))
    update = small_server.load_update_block(small_client.encrypt_update_block([0.1]))
    with pytest.raises(CiphertextError, match="model scale"):
        small_server.subtract_from(model, update)


def test_the_key_id_is_the_sha256_of_the_secret_context(small_keys: KeyMaterial) -> None:
    import hashlib

    other = crypto.generate_key_material(crypto.get_profile(small_keys.profile_name))

    assert crypto.key_id(small_keys.secret_context) == small_keys.key_id
    assert small_keys.key_id == hashlib.sha256(small_keys.secret_context).hexdigest()
    # the keyless contexts of two keys are the same bytes; their key ids differ
    assert other.public_context == small_keys.public_context
    assert other.key_id != small_keys.key_id
