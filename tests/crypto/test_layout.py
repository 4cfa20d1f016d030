import json

import numpy as np
import pytest
import torch

from crypto import DEFAULT_CANARIES, LayoutError, ModelLayout, build_layout


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
    # canaries and padding are zero
    assert np.all(blocks[layout.zero_mask] == 0)


@pytest.mark.parametrize(
    ("block_size", "canaries", "personal"),
    [(16, 4, ()), (16, 1, ("head.*",)), (8, 7, ()), (130, 4, ()), (2048, 4, ("conv.*",))],
)
def test_canaries_end_every_block_and_parameters_fill_the_rest(
    block_size: int, canaries: int, personal: tuple[str, ...]
) -> None:
    # Prepare: the parameters numbered 1, 2, 3, ... so each slot says what it holds
    arrays = _arrays()
    layout = build_layout(arrays, block_size, personal, canaries=canaries)
    numbered = {}
    start = 1
    for spec in layout.tensors:
        numbered[spec.name] = np.arange(start, start + spec.numel, dtype=np.float64).reshape(
            spec.shape
        )
        start += spec.numel

    # Execute
    blocks = layout.flatten(numbered)
    mask = layout.zero_mask

    # Assert: each block holds block_size - canaries parameters, then its canaries
    assert layout.param_slots == block_size - canaries
    assert layout.n_blocks == -(-layout.total_params // (block_size - canaries))
    assert blocks.shape == mask.shape == (layout.n_blocks, block_size)
    assert mask[:, block_size - canaries :].all()
    assert int((~mask).sum()) == layout.total_params
    assert np.array_equal(blocks[~mask], np.arange(1, layout.total_params + 1))
    assert np.all(blocks[mask] == 0)
    # the last block's padding is part of the mask, before its canaries
    padding = layout.n_blocks * layout.param_slots - layout.total_params
    assert mask[-1, : layout.param_slots].sum() == padding
    # unflatten reads the parameters only: garbage in the canaries changes nothing
    noisy = blocks + 1e6 * mask
    for name, value in layout.unflatten(noisy).items():
        assert np.array_equal(value, numbered[name].astype(value.dtype))


def test_the_default_is_four_canaries_and_the_fingerprint_covers_them() -> None:
    arrays = _arrays()
    layout = build_layout(arrays, block_size=16)
    assert layout.canaries == DEFAULT_CANARIES == 4
    assert layout.to_dict()["canaries"] == 4
    assert layout.to_dict()["format"] == 2
    assert layout.fingerprint != build_layout(arrays, 16, canaries=3).fingerprint
    assert build_layout(arrays, 16, canaries=0).zero_mask[:-1].sum() == 0


@pytest.mark.parametrize("canaries", [-1, 16, 17])
def test_a_block_needs_a_parameter_slot(canaries: int) -> None:
    with pytest.raises(LayoutError, match="canaries"):
        build_layout(_arrays(), block_size=16, canaries=canaries)


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


@pytest.mark.parametrize("bad", [b"{", b"[]", b'{"format": 99}', b'{"format": 2}'])
def test_malformed_layout_json_is_a_layout_error(bad: bytes) -> None:
    with pytest.raises(LayoutError):
        ModelLayout.from_json(bad)


def test_a_format_1_layout_is_refused_with_what_to_do() -> None:
    data = build_layout(_arrays(), block_size=16).to_dict()
    del data["canaries"]
    data["format"] = 1

    with pytest.raises(LayoutError, match=r"format 1 .*no longer supported.*build"):
        ModelLayout.from_json(json.dumps(data))


def _valid_with(**changes: object) -> bytes:
    data = build_layout(_arrays(), block_size=16).to_dict()
    data.update(changes)
    return json.dumps(data).encode()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(_nested(1000).encode(), id="1000 nested arrays"),
        pytest.param(_nested(100_000).encode(), id="100000 nested arrays"),
        pytest.param(('{"format": ' + _nested(1000) + "}").encode(), id="nested format"),
        pytest.param(_valid_with(personal=json.loads(_nested(900))), id="nested personal pattern"),
        pytest.param(
            _valid_with(
                tensors=[
                    {
                        "name": json.loads(_nested(900)),
                        "shape": [1],
                        "dtype": "float32",
                        "offset": 0,
                    }
                ]
            ),
            id="nested tensor name",
        ),
        pytest.param(b'{"format": 2, "block_size": Infinity}', id="infinite block size"),
        pytest.param(_valid_with(canaries=1e400), id="canaries 1e400"),
        pytest.param(_valid_with(canaries="four"), id="canaries a word"),
        pytest.param(_valid_with(canaries=None), id="canaries null"),
        pytest.param(b"\xff\xfe", id="not UTF-8"),
    ],
)
def test_hostile_layout_json_is_a_layout_error_never_another_exception(hostile: bytes) -> None:
    with pytest.raises(LayoutError):
        ModelLayout.from_json(hostile)


def test_a_shape_too_large_for_int64_counts_exactly() -> None:
    # a hostile layout must not wrap around into a small parameter count
    data = _valid_with(
        tensors=[{"name": "w", "shape": [2**40, 2**40], "dtype": "float32", "offset": 0}]
    )
    layout = ModelLayout.from_json(data)
    assert layout.total_params == 2**80


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
        build_layout(arrays, block_size=8)
    layout = build_layout(arrays, block_size=8, personal=["*.num_batches_tracked"])
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
