"""Models built in several threads at once are the same model: torch's one generator is shared."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from fl_client.models import build_model, resolve_model


def test_models_built_in_threads_at_once_are_all_the_seeded_model() -> None:
    factory = resolve_model("mlp")
    reference = build_model(factory, (13,), 2, seed=7, hidden=8).state_dict()

    def build(_: int) -> dict[str, torch.Tensor]:
        return build_model(factory, (13,), 2, seed=7, hidden=8).state_dict()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(8) as pool:
        built = list(pool.map(build, range(400)))

    for state in built:
        assert all(torch.equal(state[k], reference[k]) for k in reference)
