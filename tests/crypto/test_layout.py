import numpy as np
import pytest
import torch

from crypto import LayoutError, ModelLayout, build_layout


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=(4,)).astype(np.float16),
        "fc.weight": rng.normal(size=(10, 7)).astype(np.float64),
        "head.weight": rng.normal(size=(2, 10)).astype(np.float32),
    }


def test_flatten_and_unflatten_are_exact_for_every_float_dtype() -> None:
    arrays = _arrays()
    layout = build_layout(arrays, block_size=16)
    blocks = layout.flatten(arrays)
    assert blocks.shape == (layout.n_blocks, 16)
    assert layout.total_params == 36 + 4 + 70 + 20
    back = layout.unflatten(blocks)
    assert list(back) == list(arrays)
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype
        assert back[name].shape == arr.shape
        assert np.array_equal(back[name], arr)
    # padding after the last tensor is zero
    assert np.all(blocks.reshape(-1)[layout.total_params :] == 0)


def test_a_torch_state_dict_round_trips_exactly() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    state = model.state_dict()
    layout = build_layout(state, block_size=8)
    back = layout.unflatten(layout.flatten(state))
    for name, tensor in state.items():
        assert np.array_equal(back[name], tensor.numpy())


def test_fingerprint_is_stable_and_sensitive() -> None:
    arrays = _arrays()
    a = build_layout(arrays, block_size=16)
    assert a.fingerprint == build_layout(_arrays(), block_size=16).fingerprint
    assert len(a.fingerprint) == 32
    assert a.fingerprint != build_layout(arrays, block_size=32).fingerprint
    changed = dict(arrays, **{"fc.weight": np.zeros((7, 10))})
    assert a.fingerprint != build_layout(changed, block_size=16).fingerprint
    assert a.fingerprint != build_layout(arrays, block_size=16, personal=["head.*"]).fingerprint


def test_json_round_trip_keeps_the_fingerprint() -> None:
    layout = build_layout(_arrays(), block_size=16, personal=["head.*"])
    again = ModelLayout.from_json(layout.to_json())
    assert again == layout
    assert again.fingerprint == layout.fingerprint


@pytest.mark.parametrize("bad", [b"{", b"[]", b'{"format": 99}', b'{"format": 1}'])
def test_malformed_layout_json_is_a_layout_error(bad: bytes) -> None:
    with pytest.raises(LayoutError):
        ModelLayout.from_json(bad)


def test_personal_tensors_are_left_out_and_ignored_on_flatten() -> None:
    arrays = _arrays()
    layout = build_layout(arrays, block_size=16, personal=["head.*"])
    assert "head.weight" not in layout.names
    assert layout.total_params == 110
    back = layout.unflatten(layout.flatten(arrays))
    assert "head.weight" not in back


def test_non_float_tensors_must_be_marked_personal() -> None:
    arrays = {"w": np.zeros(3, dtype=np.float32), "bn.num_batches_tracked": np.array(5)}
    with pytest.raises(LayoutError, match="personal"):
        build_layout(arrays, block_size=4)
    layout = build_layout(arrays, block_size=4, personal=["*.num_batches_tracked"])
    assert layout.names == ("w",)


def test_flatten_rejects_missing_unknown_and_misshapen_tensors() -> None:
    arrays = _arrays()
    layout = build_layout(arrays, block_size=16)
    with pytest.raises(LayoutError, match="missing"):
        layout.flatten({k: v for k, v in arrays.items() if k != "fc.weight"})
    with pytest.raises(LayoutError, match="not in the layout"):
        layout.flatten(dict(arrays, extra=np.zeros(1)))
    with pytest.raises(LayoutError, match="shape"):
        layout.flatten(dict(arrays, **{"fc.weight": np.zeros((7, 10))}))
    with pytest.raises(LayoutError, match="expected"):
        layout.unflatten(np.zeros(3))


def test_everything_personal_is_an_error() -> None:
    with pytest.raises(LayoutError, match="nothing left"):
        build_layout(_arrays(), block_size=16, personal=["*"])
