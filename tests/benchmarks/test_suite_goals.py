"""Section 1's goal from table rows: which runs count as compressed, and when it is met."""

from typing import Any

from benchmarks.suite._run import half_point_goal


def _row(method: str, total_mb: float, accuracy: float) -> dict[str, Any]:
    return {"method": method, "total_mb": total_mb, "final_accuracy": accuracy}


def test_the_goal_takes_the_closest_run_within_a_tenth_of_the_bytes() -> None:
    rows = [
        _row("plaintext async (turns)", 50.0, 0.99),
        _row("hefl dense", 100.0, 0.970),
        _row("hefl top-k 5% (EF)", 9.5, 0.957),
        _row("hefl top-k 11% (EF), n2048-s26", 9.0, 0.972),
        _row("hefl top-k 10% (EF)", 14.3, 0.968),
        _row("hefl dense, n2048-s26", 75.0, 0.970),
        _row("hefl dense + personal head (FedPer)", 100.0, 0.96),
    ]

    goal = half_point_goal(rows)

    # plaintext rows, the reference and FedPer are not compressed runs
    assert [c["method"] for c in goal["compressed"]] == [
        "hefl top-k 5% (EF)",
        "hefl top-k 11% (EF), n2048-s26",
        "hefl top-k 10% (EF)",
        "hefl dense, n2048-s26",
    ]
    assert goal["best_at_most_10pct"]["method"] == "hefl top-k 11% (EF), n2048-s26"
    assert goal["met"]


def test_the_goal_is_missed_when_every_cheap_run_loses_more_than_half_a_point() -> None:
    rows = [_row("hefl dense", 100.0, 0.970), _row("hefl top-k 5% (EF)", 9.5, 0.964)]
    assert not half_point_goal(rows)["met"]
    rows = [_row("hefl dense", 100.0, 0.970), _row("hefl top-k 20% (EF)", 23.8, 0.970)]
    assert half_point_goal(rows)["best_at_most_10pct"] is None
