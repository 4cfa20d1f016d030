"""The demo's plaintext federated baseline runs a fixed schedule, from the spec alone."""

from __future__ import annotations

from deploy.demo import DEMO_SPEC
from deploy.demo_summary import BASELINE_TURNS, baseline_counts
from fl_client.study_reference import turns
from hefl_study import StudySpec, load_spec


def _with_stop(spec: StudySpec, **stop: int | None) -> StudySpec:
    return spec.model_copy(update={"stop": spec.stop.model_copy(update=stop)})


def test_the_demo_baseline_shares_the_jobs_updates_equally_in_turns() -> None:
    # Prepare: the demo's study, 60 updates, four hospitals
    spec = load_spec(DEMO_SPEC)

    # Execute
    counts = baseline_counts(spec, 4)

    # Assert: 15 each, in turns 0, 1, 2, 3, 0, …
    assert counts == [15, 15, 15, 15]
    assert turns(counts) == [0, 1, 2, 3] * 15


def test_a_count_that_does_not_divide_goes_to_the_first_hospitals() -> None:
    spec = _with_stop(load_spec(DEMO_SPEC), target_updates=10)

    counts = baseline_counts(spec, 4)

    assert counts == [3, 3, 2, 2]
    assert turns(counts) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_without_an_update_count_each_hospital_takes_a_fixed_number_of_turns() -> None:
    spec = _with_stop(load_spec(DEMO_SPEC), target_updates=None)

    assert baseline_counts(spec, 3) == [BASELINE_TURNS] * 3
