"""Plaintext baselines of a table study score the job's own model on the job's own rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.heart_disease_csv import write_hospital_csvs
from fl_client.models import model_from_spec
from fl_client.study_reference import study_baselines, turns
from fl_client.table import load_table
from fl_client.training import evaluate
from hefl_study import StudySpec, load_spec, spec_from_mapping

EXAMPLE = Path(__file__).parents[2] / "deploy" / "studies" / "heart-disease.toml"


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_hospital_csvs(tmp_path_factory.mktemp("csv"), ["cleveland", "switzerland"])


def _with(spec: StudySpec, section: str, **values: object) -> StudySpec:
    raw = spec.model_dump(mode="json")
    raw[section].update(values)
    return spec_from_mapping(raw)


def test_turns_go_round_the_sites_until_each_has_its_count() -> None:
    assert turns([2, 1, 0, 3]) == [0, 1, 3, 0, 3, 3]
    assert turns([0, 0]) == []


def test_without_updates_the_federation_holds_the_spec_s_initial_model(
    tables: dict[str, Path],
) -> None:
    # Prepare: the spec's model with arguments, as every hospital of the job builds it
    spec = _with(load_spec(EXAMPLE), "model", name="mlp", args={"hidden": 4}, seed=3)

    baselines = study_baselines(spec, tables, [0, 0])

    for site, path in tables.items():
        held_out = load_table(path, spec.data).client_data.test
        expected = evaluate(model_from_spec(spec), held_out, "binary")
        assert baselines.federated_sites[site].metrics == expected.metrics
    assert baselines.updates == 0


def test_both_baselines_are_scored_on_each_hospital_s_held_out_rows(
    tables: dict[str, Path],
) -> None:
    spec = load_spec(EXAMPLE)

    baselines = study_baselines(spec, tables, [2, 1])

    rows = {site: len(load_table(p, spec.data).test_rows) for site, p in tables.items()}
    for results in (baselines.federated_sites, baselines.centralized_sites):
        assert {site: r.n_samples for site, r in results.items()} == rows
        assert all({"accuracy", "auroc", "auprc"} <= set(r.metrics) for r in results.values())
    assert baselines.federated.n_samples == baselines.centralized.n_samples == sum(rows.values())
    # pooled as the server pools reports: weighted by each hospital's held-out rows
    weighted = sum(r.accuracy * r.n_samples for r in baselines.centralized_sites.values())
    assert baselines.centralized.accuracy == pytest.approx(weighted / sum(rows.values()))
    assert (baselines.updates, baselines.centralized_training) == (3, "2 epochs")


def test_a_spec_of_local_steps_trains_the_central_model_as_many_steps_as_the_run(
    tables: dict[str, Path],
) -> None:
    spec = _with(load_spec(EXAMPLE), "training", local_epochs=None, local_steps=2)

    baselines = study_baselines(spec, tables, [1, 2])

    assert baselines.centralized_training == "6 steps"
