"""The privacy benchmark's parts on one tiny federation (no accuracy or timing checked)."""

import math

from benchmarks import privacy
from fl_client.data import dataset_sites, load_client_data


def test_one_federation_spends_each_hospitals_budget_and_summarizes() -> None:
    setup = privacy.SETUPS[0]
    sites = dataset_sites(setup.dataset)[:2]  # two hospitals keep it short
    datas = [load_client_data(setup.dataset, s) for s in sites]

    runs = [
        {"dataset": setup.dataset, **privacy.run_one(setup, datas, epsilon, 1, 0)}
        for epsilon in (3.0, math.inf)
    ]
    rows = privacy.summarize(runs)

    private, plain = runs
    assert len(private["noise_multipliers"]) == len(datas)
    assert all(sigma > 0 for sigma in private["noise_multipliers"])
    assert plain["noise_multipliers"] == []
    assert [r["epsilon"] for r in rows] == [3.0, None]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
