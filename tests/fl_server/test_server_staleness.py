import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_server.jobspec import JobConfig
from fl_server.staleness import (
    ConstantStaleness,
    HingeStaleness,
    PolynomialStaleness,
    make_staleness_policy,
)
from tests.fl_server.helpers import make_spec


def test_constant_counts_every_update_fully_up_to_the_bound() -> None:
    policy = ConstantStaleness(mixing=0.5, max_staleness=3)
    assert [policy.weight(t) for t in range(5)] == [0.5, 0.5, 0.5, 0.5, None]


def test_polynomial_is_one_over_a_power_of_one_plus_staleness() -> None:
    policy = PolynomialStaleness(a=0.5, max_staleness=100)
    assert policy.weight(0) == 1.0
    assert policy.weight(3) == pytest.approx(0.5)
    assert policy.weight(8) == pytest.approx(1 / 3)
    assert policy.weight(101) is None


def test_hinge_is_flat_up_to_b_then_falls_like_fedasync() -> None:
    policy = HingeStaleness(a=10.0, b=4, max_staleness=50)
    assert [policy.weight(t) for t in range(5)] == [1.0] * 5
    assert policy.weight(5) == pytest.approx(1 / 11)
    assert policy.weight(6) == pytest.approx(1 / 21)


@given(
    kind=st.sampled_from(["constant", "polynomial", "hinge"]),
    a=st.floats(0.01, 50),
    b=st.integers(0, 20),
    mixing=st.floats(0.01, 1.0),
    staleness=st.integers(0, 200),
)
def test_weights_are_in_zero_one_and_never_grow_with_staleness(
    kind: str, a: float, b: int, mixing: float, staleness: int
) -> None:
    policy = make_staleness_policy(kind, a=a, b=b, mixing=mixing, max_staleness=1000)  # type: ignore[arg-type]
    now, later = policy.weight(staleness), policy.weight(staleness + 1)
    assert now is not None
    assert later is not None
    assert 0 < later <= now <= mixing
    assert math.isclose(policy.weight(0) or 0, mixing)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ConstantStaleness(mixing=0.0),
        lambda: ConstantStaleness(mixing=1.5),
        lambda: ConstantStaleness(max_staleness=-1),
        lambda: PolynomialStaleness(a=0.0),
        lambda: HingeStaleness(a=-1.0),
        lambda: HingeStaleness(b=-1),
    ],
)
def test_invalid_parameters_are_refused(build: object) -> None:
    with pytest.raises(ValueError, match=r"must be|needs"):
        build()  # type: ignore[operator]


def test_negative_staleness_is_a_bug() -> None:
    with pytest.raises(ValueError, match="staleness must be >= 0"):
        ConstantStaleness().weight(-1)


def test_a_jobs_spec_picks_fedasync_defaults_per_kind() -> None:
    poly = JobConfig.from_spec(make_spec(staleness="polynomial")).policy
    hinge = JobConfig.from_spec(make_spec(staleness="hinge", staleness_b=2)).policy
    constant = JobConfig.from_spec(make_spec(staleness="constant", mixing=0.5)).policy
    assert isinstance(poly, PolynomialStaleness)
    assert poly.a == 0.5
    assert isinstance(hinge, HingeStaleness)
    assert (hinge.a, hinge.b) == (10.0, 2)
    assert hinge.describe() == {
        "kind": "hinge",
        "mixing": 1.0,
        "max_staleness": 64,
        "a": 10.0,
        "b": 2,
    }
    assert constant.describe() == {"kind": "constant", "mixing": 0.5, "max_staleness": 64}
