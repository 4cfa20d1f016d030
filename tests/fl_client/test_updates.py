"""delta → compress → scale → encrypt → envelope, and error feedback over many rounds."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crypto
from fl_client.updates import (
    CompressionConfig,
    clip_update,
    compress_delta,
    decrypt_model,
    decrypt_model_stream,
    encrypt_initial_model,
    prepare_update,
    write_model,
    write_update,
)


def _layout(n_blocks: int, block_size: int) -> crypto.ModelLayout:
    params = n_blocks * (block_size - crypto.DEFAULT_CANARIES) - 3
    return crypto.build_layout({"w": np.zeros(params)}, block_size)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    method=st.sampled_from(["dense", "top-k", "random-k"]),
    fraction=st.sampled_from([0.1, 0.3, 0.5]),
    rounds=st.integers(1, 30),
)
def test_error_feedback_sent_plus_residual_equals_the_sum_of_deltas(
    seed: int, method: str, fraction: float, rounds: int
) -> None:
    config = CompressionConfig(method=method, fraction=fraction, seed=seed)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    residual = None
    sent = np.zeros((12, 5))
    total = np.zeros((12, 5))
    for round_ in range(rounds):
        delta = rng.normal(size=(12, 5)) * rng.uniform(0.01, 10)
        total += delta
        out = compress_delta(delta, residual, config, round_)
        assert len(out.indices) == config.k(12)
        sent[out.indices] += out.blocks
        residual = out.residual
        assert np.allclose(sent + residual, total, rtol=0, atol=1e-9)


def test_error_feedback_holds_through_encryption(
    small_client: crypto.ClientCipher, small_profile: crypto.CkksProfile
) -> None:
    # Prepare: top-k 25 % with a client step, 40 rounds, decrypting what went on the wire
    layout = _layout(8, small_profile.block_size)
    config = CompressionConfig(method="top-k", fraction=0.25)
    rng = np.random.default_rng(1)
    step = 0.5
    residual = None
    sent = np.zeros((layout.n_blocks, layout.block_size))
    total = np.zeros_like(sent)

    # Execute
    for round_ in range(40):
        delta = rng.normal(scale=1.0, size=sent.shape)
        total += delta
        prepared = prepare_update(
            small_client,
            layout,
            delta,
            residual,
            config,
            step=step,
            round_=round_,
            base_version=round_,
            key_epoch=1,
        )
        assert prepared.report.blocks_sent == 2
        for block in prepared.update.blocks:
            sent[block.index] += small_client.decrypt_block(block.data) / step
        residual = prepared.residual

    # Assert: each decrypted block carries noise below the profile's bound (÷ step)
    assert residual is not None
    bound = small_profile.error_bound(1) / step * 40
    assert np.max(np.abs(sent + residual - total)) <= bound
    assert np.max(np.abs(residual)) > 100 * bound  # the residual is doing real work


def test_without_error_feedback_what_is_not_sent_is_dropped() -> None:
    config = CompressionConfig(method="top-k", fraction=0.25, error_feedback=False)
    delta = np.zeros((4, 2))
    delta[2] = 5.0
    residual = np.full((4, 2), 100.0)
    out = compress_delta(delta, residual, config, 0)
    assert out.indices.tolist() == [2]
    assert np.array_equal(out.blocks, delta[[2]])


def test_top_k_with_energy_sends_fewer_blocks_when_the_update_is_concentrated() -> None:
    # one block holds 96% of the energy: energy 0.9 sends it alone, of at most 3
    config = CompressionConfig(method="top-k", fraction=0.3, energy=0.9)
    delta = np.full((10, 2), 0.1)
    delta[6] = 3.0
    assert compress_delta(delta, None, config, 0).indices.tolist() == [6]
    # spread evenly: the cap of 3 blocks (30% of 10) holds
    assert len(compress_delta(np.ones((10, 2)), None, config, 0).indices) == 3


def test_random_k_draws_its_blocks_from_the_seed_and_round() -> None:
    config = CompressionConfig(method="random-k", fraction=0.3, seed=11)
    delta = np.ones((10, 2))
    a = compress_delta(delta, None, config, 4).indices
    assert np.array_equal(a, compress_delta(delta, None, config, 4).indices)
    assert np.array_equal(a, crypto.random_block_indices(10, 3, 11, 4))
    assert not all(
        np.array_equal(a, compress_delta(delta, None, config, r).indices) for r in range(5, 9)
    )


def test_the_wire_report_counts_exactly_what_was_sent(
    small_client: crypto.ClientCipher, small_profile: crypto.CkksProfile
) -> None:
    layout = _layout(10, small_profile.block_size)
    delta = np.random.default_rng(0).normal(scale=0.1, size=(10, small_profile.block_size))
    dense = prepare_update(
        small_client,
        layout,
        delta,
        None,
        CompressionConfig(),
        step=1,
        round_=0,
        base_version=0,
        key_epoch=1,
    )
    sparse = prepare_update(
        small_client,
        layout,
        delta,
        None,
        CompressionConfig("top-k", 0.2),
        step=1,
        round_=0,
        base_version=0,
        key_epoch=1,
    )
    for prepared, blocks in ((dense, 10), (sparse, 2)):
        report = prepared.report
        assert report.envelope_bytes == len(prepared.envelope)
        assert report.blocks_sent == blocks == len(prepared.update.blocks)
        assert report.shared_params == layout.total_params
        assert report.bytes_per_param == pytest.approx(len(prepared.envelope) / layout.total_params)
        # header (40 + 32 bytes), then per block 8 bytes of index/length and the ciphertext
        ciphertexts = sum(len(b.data) for b in prepared.update.blocks)
        assert report.envelope_bytes == 72 + 8 * blocks + ciphertexts
    assert sparse.report.envelope_bytes < dense.report.envelope_bytes / 4
    assert sparse.report.bytes_per_value_sent == pytest.approx(
        dense.report.bytes_per_value_sent, rel=0.01
    )
    assert dense.residual is None
    assert sparse.residual is not None


def test_an_initial_model_decrypts_back_to_itself(
    small_client: crypto.ClientCipher, small_profile: crypto.CkksProfile
) -> None:
    layout = _layout(3, small_profile.block_size)
    values = np.random.default_rng(2).normal(size=(3, small_profile.block_size))
    raw = encrypt_initial_model(small_client, layout, values, key_epoch=1)
    limits = crypto.EnvelopeLimits(3, small_profile.max_block_bytes, layout.fingerprint)
    model = crypto.model_from_bytes(raw, limits)
    assert model.version == 0
    assert len(model.blocks) == 3
    back = decrypt_model(small_client, model, layout)
    assert np.max(np.abs(back - values)) <= small_profile.error_bound(1)


@pytest.mark.parametrize(
    "config",
    [CompressionConfig(), CompressionConfig(method="top-k", fraction=0.25)],
    ids=["dense", "top-k"],
)
def test_hospital_level_clipping_bounds_what_is_sent_and_keeps_the_rest_as_residual(
    small_client: crypto.ClientCipher, small_profile: crypto.CkksProfile, config: CompressionConfig
) -> None:
    # Prepare: updates far above the bound, a client step η = 0.5
    layout = _layout(8, small_profile.block_size)
    rng = np.random.default_rng(3)
    clip, step = 2.0, 0.5
    residual = None
    for round_ in range(5):
        delta = np.where(layout.zero_mask, 0.0, rng.normal(scale=1.0, size=layout.zero_mask.shape))
        # Execute
        prepared = prepare_update(
            small_client,
            layout,
            delta,
            residual,
            config,
            step=step,
            round_=round_,
            base_version=round_,
            key_epoch=1,
            clip=clip,
        )
        sent = np.stack([small_client.decrypt_block(b.data) for b in prepared.update.blocks])
        # Assert: u = η · compressed(clipped(delta + residual)) never exceeds C
        assert np.linalg.norm(sent) <= clip + 1e-3
        if config.method == "dense":
            assert np.linalg.norm(sent) == pytest.approx(clip, rel=1e-4)
            assert prepared.residual is None
        else:
            # the residual is what the clipped vector did not send: together within C / η
            assert prepared.residual is not None
            whole = prepared.residual.copy()
            whole[prepared.compressed.indices] += prepared.compressed.blocks
            assert np.linalg.norm(whole) == pytest.approx(clip / step, rel=1e-9)
        residual = prepared.residual


def test_an_update_within_the_bound_is_not_clipped() -> None:
    values = np.full((2, 3), 0.1)
    assert np.array_equal(clip_update(values, 10.0), values)
    assert np.linalg.norm(clip_update(values * 100, 1.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        clip_update(values, 0.0)


class _CountingFile(io.BytesIO):
    """A sink that remembers the largest single write: what the writer held at once."""

    largest = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.largest = max(self.largest, len(data))
        return super().write(data)


def test_an_update_is_written_block_by_block_as_the_envelope_prepare_update_makes(
    small_client: crypto.ClientCipher, small_profile: crypto.CkksProfile
) -> None:
    # Prepare: a dense update of 6 blocks with a client step
    layout = _layout(6, small_profile.block_size)
    delta = np.random.default_rng(3).normal(0, 0.1, (6, small_profile.block_size))
    sink = _CountingFile()

    # Execute
    written = write_update(
        small_client,
        layout,
        delta,
        None,
        CompressionConfig(),
        sink,
        step=0.5,
        round_=0,
        base_version=4,
        key_epoch=1,
    )

    # Assert: one block per write, an envelope the server's parser reads back
    limits = crypto.EnvelopeLimits(6, small_profile.max_block_bytes, layout.fingerprint)
    update = crypto.update_from_bytes(sink.getvalue(), limits)
    assert sink.largest <= small_profile.max_block_bytes + 8
    assert written.report.envelope_bytes == len(sink.getvalue())
    assert update.update_id == written.update_id
    assert update.base_version == 4
    got = np.array([small_client.decrypt_block(b.data) for b in update.blocks])
    assert np.max(np.abs(got - 0.5 * delta)) <= small_profile.error_bound(1)


def test_a_model_decrypts_as_its_envelope_streams_in(
    small_client: crypto.ClientCipher, small_profile: crypto.CkksProfile
) -> None:
    # Prepare: a 4-block model written to a sink, cut in uneven pieces
    layout = _layout(4, small_profile.block_size)
    values = np.random.default_rng(4).normal(size=(4, small_profile.block_size))
    sink = io.BytesIO()
    n = write_model(small_client, layout, values, sink, version=7, key_epoch=2)
    raw = sink.getvalue()
    pieces = [raw[i : i + 1000] for i in range(0, len(raw), 1000)]
    limits = crypto.EnvelopeLimits(4, small_profile.max_block_bytes, layout.fingerprint)
    decrypted: list[int] = []

    # Execute
    head, back = decrypt_model_stream(
        small_client, pieces, limits, layout, on_block=lambda: decrypted.append(1)
    )

    # Assert
    assert n == len(raw)
    assert (head.version, head.key_epoch, head.block_count) == (7, 2, 4)
    assert len(decrypted) == 4
    assert np.max(np.abs(back - values)) <= small_profile.error_bound(1)


def test_a_partial_stream_without_a_base_is_refused(
    small_client: crypto.ClientCipher, small_profile: crypto.CkksProfile
) -> None:
    layout = _layout(4, small_profile.block_size)
    values = np.zeros((1, small_profile.block_size))
    sink = io.BytesIO()
    write_model(
        small_client, _layout(1, small_profile.block_size), values, sink, version=1, key_epoch=1
    )
    limits = crypto.EnvelopeLimits(4, small_profile.max_block_bytes)

    with pytest.raises(ValueError, match="a full model has 4 blocks"):
        decrypt_model_stream(small_client, [sink.getvalue()], limits, layout)
