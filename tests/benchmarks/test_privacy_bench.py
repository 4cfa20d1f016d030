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


def test_one_hospital_level_federation_through_ckks_reports_epsilon_and_metrics() -> None:
    setup = privacy.SETUPS[0]
    sites = dataset_sites(setup.dataset)[:2]
    datas = [load_client_data(setup.dataset, s) for s in sites]

    runs = [privacy.run_hospital_level(setup, datas, z, 1, 0) for z in (0.0, 1.0)]
    rows = privacy.summarize_hospital_level(runs)

    assert rows[0]["epsilon"] is None
    assert rows[1]["epsilon"] > 0
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
