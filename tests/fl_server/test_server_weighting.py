"""Data weighting and the step schedule: what an update counts beyond its staleness."""

from __future__ import annotations

import math

import pytest

from fl_server.staleness import ConstantStaleness, PolynomialStaleness
from fl_server.weighting import ClientShare, DataWeighting, StepSchedule, UpdateWeigher


def test_uniform_weighting_counts_every_update_alike() -> None:
    known = {"a": ClientShare(200, 10), "b": ClientShare(30, 40)}

    assert DataWeighting("uniform").factor("b", 30, known) == 1.0


def test_at_an_even_pace_an_update_counts_its_fedavg_share() -> None:
    # Prepare: four hospitals, each with as many updates applied
    rows = {"a": 200, "b": 150, "c": 30, "d": 100}
    known = {k: ClientShare(n, 25) for k, n in rows.items()}

    # Execute
    factors = {k: DataWeighting("data").factor(k, n, known) for k, n in rows.items()}

    # Assert: n_i / sum n_j, up to the Laplace terms (this update and one per hospital)
    for k, n in rows.items():
        assert factors[k] == pytest.approx(n / 480, rel=0.03)


def test_a_fast_small_site_counts_less_per_update_than_a_slow_big_one() -> None:
    # the small site sent five times as many updates as the big one
    known = {"small": ClientShare(30, 50), "big": ClientShare(300, 10)}
    weighting = DataWeighting("data", clip=4.0)

    small = weighting.factor("small", 30, known)
    big = weighting.factor("big", 300, known)

    # over the run the small site's summed weight stays near its data share (30 / 330)
    assert 50 * small < 10 * big
    assert 50 * small / (50 * small + 10 * big) == pytest.approx(30 / 330, rel=0.25)


def test_the_frequency_correction_is_clipped() -> None:
    # a hospital with almost no updates of many is not given an unbounded weight
    known = {"rare": ClientShare(100, 0), "often": ClientShare(100, 1000)}

    factor = DataWeighting("data", clip=2.0).factor("rare", 100, known)

    assert factor == pytest.approx(0.5 * 2.0)


def test_an_undeclared_update_counts_its_hospitals_last_declaration_or_the_mean() -> None:
    known = {"a": ClientShare(300, 5), "b": ClientShare(100, 5)}
    weighting = DataWeighting("data")

    assert weighting.factor("a", None, known) == weighting.factor("a", 300, known)
    assert weighting.factor("new", None, known) == weighting.factor("new", 200, known)


def test_the_inverse_sqrt_step_halves_after_three_half_lives() -> None:
    schedule = StepSchedule("inverse-sqrt", half=50)

    assert schedule.step(0) == 1.0
    assert schedule.step(150) == pytest.approx(0.5)
    assert StepSchedule("constant").step(10_000) == 1.0


def test_the_whole_weight_is_bounded_by_one_and_by_max_staleness() -> None:
    weigher = UpdateWeigher(
        ConstantStaleness(max_staleness=3), DataWeighting("data", clip=8.0), StepSchedule()
    )
    known = {"big": ClientShare(1000, 0), "small": ClientShare(10, 100)}

    assert (
        weigher.weight(staleness=0, client_id="big", samples=1000, known=known, applied=100) == 1.0
    )
    assert (
        weigher.weight(staleness=4, client_id="big", samples=1000, known=known, applied=100) is None
    )


def test_staleness_data_and_step_multiply() -> None:
    weigher = UpdateWeigher(
        PolynomialStaleness(a=0.5), DataWeighting("data"), StepSchedule("inverse-sqrt", half=10)
    )
    known = {"a": ClientShare(100, 3), "b": ClientShare(100, 3)}

    weight = weigher.weight(staleness=3, client_id="a", samples=100, known=known, applied=30)

    data = DataWeighting("data").factor("a", 100, known)
    assert weight == pytest.approx(0.5 * data * 0.5)


@pytest.mark.parametrize("clip", [0.5, math.inf, math.nan])
def test_a_clip_below_one_or_not_finite_is_refused(clip: float) -> None:
    with pytest.raises(ValueError, match="clip"):
        DataWeighting("data", clip=clip)
