import numpy as np
import pytest

from crypto import (
    all_blocks,
    blocks_for_fraction,
    random_block_indices,
    random_k_blocks,
    top_energy_blocks,
    top_k_blocks,
)


def test_top_k_sends_the_blocks_of_largest_norm() -> None:
    delta = np.zeros((5, 4))
    delta[1] = 3.0
    delta[3] = -5.0
    delta[4] = 0.5
    out = top_k_blocks(delta, None, 2)
    assert out.indices.tolist() == [1, 3]
    assert np.array_equal(out.blocks, delta[[1, 3]])
    assert np.array_equal(out.residual[[1, 3]], np.zeros((2, 4)))
    assert np.array_equal(out.residual[4], delta[4])


def test_top_k_adds_the_residual_before_choosing() -> None:
    delta = np.zeros((3, 2))
    delta[0] = 1.0
    residual = np.zeros((3, 2))
    residual[2] = 10.0
    out = top_k_blocks(delta, residual, 1)
    assert out.indices.tolist() == [2]
    assert np.array_equal(out.residual[0], [1.0, 1.0])


def test_error_feedback_eventually_sends_everything() -> None:
    # Invariant: sum of what was sent + residual == sum of all deltas, every round.
    rng = np.random.default_rng(0)
    residual = None
    sent_total = np.zeros((20, 8))
    delta_total = np.zeros((20, 8))
    for step in range(200):
        delta = rng.normal(size=(20, 8))
        delta_total += delta
        compressor = top_k_blocks if step % 2 else random_k_blocks
        if compressor is top_k_blocks:
            out = top_k_blocks(delta, residual, 3)
        else:
            out = random_k_blocks(delta, residual, 3, seed=7, round_=step)
        sent_total[out.indices] += out.blocks
        residual = out.residual
        assert np.allclose(sent_total + residual, delta_total, atol=1e-9)
    # the residual stays bounded: nothing is starved forever
    assert residual is not None
    assert np.max(np.abs(residual)) < np.max(np.abs(delta_total)) + 50


def test_inputs_are_not_modified() -> None:
    delta = np.ones((4, 2))
    residual = np.ones((4, 2))
    top_k_blocks(delta, residual, 1)
    assert np.array_equal(delta, np.ones((4, 2)))
    assert np.array_equal(residual, np.ones((4, 2)))


def test_all_blocks_clears_the_residual() -> None:
    delta = np.arange(6.0).reshape(3, 2)
    out = all_blocks(delta, np.ones((3, 2)))
    assert out.indices.tolist() == [0, 1, 2]
    assert np.array_equal(out.blocks, delta + 1)
    assert not out.residual.any()


def test_random_indices_are_derivable_by_both_sides_and_change_per_round() -> None:
    a = random_block_indices(100, 10, seed=42, round_=3)
    assert np.array_equal(a, random_block_indices(100, 10, seed=42, round_=3))
    assert len(set(a.tolist())) == 10
    assert list(a) == sorted(a)
    assert not np.array_equal(a, random_block_indices(100, 10, seed=42, round_=4))
    assert not np.array_equal(a, random_block_indices(100, 10, seed=43, round_=3))


def test_fraction_to_block_count() -> None:
    assert blocks_for_fraction(100, 0.1) == 10
    assert blocks_for_fraction(3, 0.1) == 1
    assert blocks_for_fraction(7, 1.0) == 7
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="fraction"):
            blocks_for_fraction(10, bad)


@pytest.mark.parametrize("k", [0, 6])
def test_k_out_of_range_is_an_error(k: int) -> None:
    with pytest.raises(ValueError, match="k must be"):
        top_k_blocks(np.zeros((5, 2)), None, k)
    with pytest.raises(ValueError, match="k must be"):
        random_block_indices(5, k, 1, 1)


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="n_blocks, block_size"):
        all_blocks(np.zeros(5))
    with pytest.raises(ValueError, match="residual shape"):
        all_blocks(np.zeros((2, 2)), np.zeros((3, 2)))


def test_top_energy_sends_the_fewest_blocks_holding_the_share() -> None:
    # squared norms 16, 9, 1, 0 (total 26): 16 alone is 62%, 16 + 9 is 96%
    delta = np.zeros((4, 1))
    delta[:, 0] = [3.0, 0.0, 4.0, 1.0]
    assert top_energy_blocks(delta, None, 0.5, 4).indices.tolist() == [2]
    assert top_energy_blocks(delta, None, 0.9, 4).indices.tolist() == [0, 2]
    assert top_energy_blocks(delta, None, 1.0, 4).indices.tolist() == [0, 2, 3]


def test_top_energy_is_capped_and_keeps_what_it_does_not_send() -> None:
    delta = np.ones((5, 3))
    out = top_energy_blocks(delta, np.ones((5, 3)), 1.0, 2)
    assert len(out.indices) == 2
    assert np.array_equal(out.blocks, np.full((2, 3), 2.0))
    # error feedback: what was sent plus what stays is delta + residual
    assert out.residual.sum() + out.blocks.sum() == 2 * delta.sum()


def test_top_energy_of_a_zero_update_sends_one_block() -> None:
    assert len(top_energy_blocks(np.zeros((3, 2)), None, 0.9, 3).indices) == 1


@pytest.mark.parametrize(("energy", "k_max"), [(0.0, 1), (1.5, 1), (0.5, 0), (0.5, 4)])
def test_top_energy_refuses_bad_arguments(energy: float, k_max: int) -> None:
    with pytest.raises(ValueError, match="must be in"):
        top_energy_blocks(np.ones((3, 2)), None, energy, k_max)
