"""The server's keyless noise (hospital-level DP): reproducible, removable, canaries clean."""

from __future__ import annotations

import numpy as np
import pytest

import crypto
from crypto import ClientCipher, ServerCipher


def _layout(profile: crypto.CkksProfile) -> crypto.ModelLayout:
    # two blocks, the second half padding: canaries and padding must stay 0
    n = profile.block_size - crypto.DEFAULT_CANARIES
    return crypto.build_layout({"w": np.zeros(n + n // 2)}, block_size=profile.block_size)


def _model(client: ClientCipher, server: ServerCipher, values: np.ndarray) -> crypto.EncryptedBlock:
    return server.load_model_block(client.encrypt_model_block(values))


def test_same_seed_same_noise_and_subtract_removes_it_exactly(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    # Prepare
    mask = _layout(small_profile).zero_mask
    data = small_client.encrypt_model_block(np.zeros(small_profile.block_size))
    first, second, third = (small_server.load_model_block(data) for _ in range(3))
    # Execute
    small_server.add_noise(first, 7, 0.5, index=1, zero_mask=mask[1])
    small_server.add_noise(second, 7, 0.5, index=1, zero_mask=mask[1])
    small_server.add_noise(third, 8, 0.5, index=1, zero_mask=mask[1])
    # Assert: the same (seed, block) is the same ciphertext, another seed is not
    assert small_server.block_to_bytes(first) == small_server.block_to_bytes(second)
    assert small_server.block_to_bytes(first) != small_server.block_to_bytes(third)
    small_server.subtract_noise(first, 7, 0.5, index=1, zero_mask=mask[1])
    assert small_server.block_to_bytes(first) == small_server.block_to_bytes(
        small_server.load_model_block(data)
    )


def test_noise_has_its_std_on_parameters_and_none_on_canaries_or_padding(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    # Prepare
    layout = _layout(small_profile)
    blocks = [_model(small_client, small_server, np.zeros(small_profile.block_size)) for _ in "ab"]
    # Execute
    for index, block in enumerate(blocks):
        small_server.add_noise(block, 11, 0.8, index=index, zero_mask=layout.zero_mask[index])
    out = np.stack([small_client.decrypt_block(small_server.block_to_bytes(b)) for b in blocks])
    # Assert
    free = out[~layout.zero_mask]
    assert abs(float(free.std()) - 0.8) < 0.05
    assert abs(float(free.mean())) < 0.05
    assert float(np.abs(out[layout.zero_mask]).max()) < small_profile.error_bound(1)
    assert crypto.check_model(layout, small_profile, out).check is None
    # each block its own stream: block 1 is not block 0's noise again
    assert not np.allclose(out[0, :100], out[1, :100])


def test_noise_refuses_a_bad_std_or_an_update_scale_block(
    small_client: ClientCipher, small_server: ServerCipher, small_profile: crypto.CkksProfile
) -> None:
    mask = np.zeros(small_profile.block_size, dtype=np.bool_)
    model = _model(small_client, small_server, np.zeros(small_profile.block_size))
    with pytest.raises(ValueError, match="std"):
        small_server.add_noise(model, 1, float("nan"), index=0, zero_mask=mask)
    update = small_server.load_update_block(
        small_client.encrypt_update_block(np.zeros(small_profile.block_size))
    )
    with pytest.raises(crypto.CiphertextError, match="model-scale"):
        small_server.add_noise(update, 1, 0.1, index=0, zero_mask=mask)
