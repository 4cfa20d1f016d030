"""The pure parts of the hefl-versus-Flower benchmark: plan, schedule, time to target,
summary, goals, rendering, the byte-counting relay and the Flower venv check.

The comparison itself (live services, Flower's processes) is a benchmark, not a test.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from benchmarks.flower import _compare, _deploy, render
from benchmarks.flower._relay import ByteRelay
from benchmarks.suite import _run

POOLED = 0.8  # targets 0.68 / 0.72 / 0.76


def _run_dict(
    scenario: str,
    system: str,
    rep: int,
    seconds: list[float],
    accuracy: list[float],
    *,
    all_active: float | None = 1.0,
    per_site: list[float] | None = None,
    updates: int = 8,
    bytes_up: list[int] | None = None,
    adapted: list[float] | None = None,
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "system": system,
        "repetition": rep,
        "seconds": seconds,
        "accuracy": accuracy,
        "updates": list(range(len(seconds))),
        "all_active_s": all_active,
        "final_per_site": per_site or [0.5, 0.5, 0.5],
        "client_updates": updates,
        "bytes_up": bytes_up,
        "bytes_down": None if bytes_up is None else [2 * b for b in bytes_up],
        "adapted_per_site": adapted,
    }


def test_sync_rounds_give_at_least_as_many_updates() -> None:
    assert _compare.rounds_for(200, 4) == 50
    assert _compare.rounds_for(42, 3) == 14
    assert _compare.rounds_for(40, 3) == 14


def test_the_full_plan_is_the_issues_workload() -> None:
    plan = _compare.PLANS["full"]
    scenarios = {s.key: s for s in _compare.scenarios()}

    assert plan.repetitions >= 3
    assert plan.updates_of(scenarios["straggler"]) == 200
    # the big-slow case: whole rounds of its 3 hospitals, so both systems apply as many
    big = scenarios["big-slow"]
    assert plan.updates_of(big) % len(big.sites) == 0
    assert _compare.HEART_TRAIN.steps == 10
    assert (_compare.HEART_TRAIN.batch_size, _compare.HEART_TRAIN.lr) == (16, 0.01)


def test_the_straggler_is_five_times_slower_and_last() -> None:
    scenarios = {s.key: s for s in _compare.scenarios()}

    straggler = scenarios["straggler"].delays
    assert straggler[-1] == 5 * straggler[0]
    assert len(set(straggler[:-1])) == 1
    assert len(set(scenarios["no-straggler"].delays)) == 1
    big = scenarios["big-slow"]
    assert big.sites[-1] == "cleveland-hungary"
    assert big.delays[-1] == 5 * big.delays[0]


def test_flower_runs_come_after_every_hefl_and_sim_run() -> None:
    # Prepare
    plan = _compare.PLANS["full"]
    chosen = _compare.scenarios()

    # Execute
    order = _compare.run_order(plan, chosen)

    # Assert: every (scenario, system, repetition) once; Flower's repetition 0 of every
    # scenario before its repetition 1
    keys = [(s.key, system, rep) for s, system, rep in order]
    assert len(keys) == len(set(keys)) == 4 * len(chosen) * plan.repetitions
    first_flower = next(i for i, k in enumerate(keys) if k[1] == "flower")
    assert all(k[1] == "flower" for k in keys[first_flower:])
    flower = [k for k in keys if k[1] == "flower"]
    assert [k[2] for k in flower[: len(chosen)]] == [0] * len(chosen)


def test_only_the_systems_asked_for_run() -> None:
    plan = _compare.PLANS["full"]
    chosen = _compare.scenarios()

    order = _compare.run_order(plan, chosen, ("hefl", "hefl-rounds"))

    assert {system for _, system, _ in order} == {"hefl", "hefl-rounds"}
    assert len(order) == 2 * len(chosen) * plan.repetitions


def test_time_to_target_on_the_strict_clock_and_after_all_active() -> None:
    run = _run_dict("straggler", "hefl", 0, [0.5, 2.0, 4.0, 6.0], [0.5, 0.7, 0.73, 0.75])

    assert _compare._time_to(run, 0.72) == (4.0, 3.0)
    # reached before every client was active: zero after it, not negative
    assert _compare._time_to({**run, "all_active_s": 5.0}, 0.72) == (4.0, 0.0)
    assert _compare._time_to({**run, "all_active_s": None}, 0.72) == (4.0, None)
    assert _compare._time_to(run, 0.9) == (None, None)


def test_a_run_that_never_got_there_counts_as_infinitely_slow() -> None:
    spread = _compare._spread([3.0, None, 1.0])

    assert spread["median"] == 3.0
    assert (spread["min"], spread["max"]) == (1.0, None)
    assert (spread["reached"], spread["n"]) == (2, 3)
    assert _compare._spread([None, None, 1.0])["median"] is None


def _runs() -> list[dict[str, Any]]:
    runs = []
    for rep in range(3):
        runs.append(
            _run_dict(
                "straggler",
                "hefl",
                rep,
                [1.0, 2.0, 3.0],
                [0.6, 0.73, 0.74 + rep / 100],
                bytes_up=[100, 100, 100, 100],
            )
        )
        runs.append(
            _run_dict(
                "straggler",
                "flower",
                rep,
                [10.0, 20.0, 30.0],
                [0.6, 0.7, 0.75],
                all_active=20.0,
                bytes_up=[50, 50, 50, 50],
            )
        )
        runs.append(
            _run_dict(
                "big-slow",
                "hefl",
                rep,
                [1.0],
                [0.7],
                per_site=[0.9, 0.9, 0.6],
                adapted=[0.8, 0.8, 0.7 + rep / 20],
            )
        )
        runs.append(_run_dict("big-slow", "flower", rep, [5.0], [0.7], per_site=[0.8, 0.8, 0.8]))
    return runs


def test_the_summary_gives_medians_spreads_and_bytes_per_update() -> None:
    # Execute
    summary = _compare.summarize(_runs(), POOLED)

    # Assert
    hefl = summary["straggler"]["hefl"]
    assert hefl["repetitions"] == 3
    assert hefl["final_accuracy"]["median"] == pytest.approx(0.75)
    assert (hefl["final_accuracy"]["min"], hefl["final_accuracy"]["max"]) == (0.74, 0.76)
    assert [t["level"] for t in hefl["targets"]] == [0.68, 0.72, 0.76]
    assert hefl["targets"][1]["strict_s"]["median"] == 2.0
    assert hefl["targets"][1]["after_all_active_s"]["median"] == 1.0
    assert hefl["targets"][2]["strict_s"]["reached"] == 1
    assert hefl["bytes_up_per_update"]["median"] == 50.0  # 400 bytes for 8 updates
    assert hefl["bytes_down_per_update"]["median"] == 100.0
    flower = summary["straggler"]["flower"]
    assert flower["targets"][0]["strict_s"]["median"] == 20.0
    assert flower["targets"][0]["after_all_active_s"]["median"] == 0.0
    assert flower["round_s"]["median"] == 10.0  # 10 s between two global models
    assert "round_s" not in hefl


def test_the_goals_compare_medians() -> None:
    summary = _compare.summarize(_runs(), POOLED)

    goals = _compare.goals(summary, 2, {"0": 0.7, "1": 0.65, "2": 0.8})

    assert goals["final_accuracy_straggler"] == {
        "hefl": 0.75,
        "flower": 0.75,
        "against": "flower",
        "met": True,
    }
    assert goals["faster_than_flower_strict"]["met"] is True
    assert (
        goals["faster_than_flower_strict"]["hefl_s"],
        goals["faster_than_flower_strict"]["flower_s"],
    ) == (2.0, 30.0)
    # the shared model misses; the model taken home adapted (median 0.75) meets it
    big = goals["big_hospital_own_rows"]
    assert (big["hefl"], big["flower"], big["alone"]) == (0.6, 0.8, 0.7)
    assert big["hefl_adapted"] == pytest.approx(0.75)
    assert "flower_adapted" not in big
    assert big["adapt_epochs"] == _compare.ADAPT_EPOCHS
    assert big["met"] is False
    assert big["adapted_met"] is True


def _report() -> dict[str, Any]:
    runs = _runs()
    summary = _compare.summarize(runs, POOLED)
    chosen = [s for s in _compare.scenarios() if s.key in ("straggler", "big-slow")]
    plan = _compare.PLANS["full"]
    return {
        "mode": "full",
        "when": "2026-01-01T00:00:00Z",
        "elapsed_s": 1.0,
        "flwr": _deploy.FLWR_VERSION,
        "settings": _compare.settings(plan),
        "scenarios": [vars(s) for s in chosen],
        "pooled_accuracy": POOLED,
        "big_hospital": "cleveland-hungary",
        "big_alone_accuracy": {"0": 0.7},
        "summary": summary,
        "goals": _compare.goals(summary, 2, {"0": 0.7}),
        "runs": runs,
    }


def test_the_report_renders_every_scenario_system_and_goal() -> None:
    text = render(_report())

    assert "| hefl async (live services) | 3 | 8 | 75.00 [74.00-76.00] |" in text
    assert "| Flower FedAvg (deployed) | 3 |" in text
    assert "72.0% (0.9 x pooled)" in text
    assert "hefl async final accuracy ≥ Flower FedAvg's, straggler: **met**" in text
    assert (
        "own-row accuracy no worse than training alone: with the shared model **not met** "
        "(hefl 60.00%, Flower 80.00%, alone 70.00%); with the model it takes home adapted "
        f"to its rows ({_compare.ADAPT_EPOCHS} epochs) **met** (75.00%) (medians)."
    ) in text
    assert "taken home adapted" in text
    assert "cleveland-hungary alone" in text
    assert "A Flower round took 10.0 [10.0-10.0] s" in text


def test_the_report_is_written_and_rerendered_from_its_json(tmp_path: Path) -> None:
    report = _report()

    _compare.write(report, tmp_path)

    assert (tmp_path / "flower.md").read_text().startswith("### Flower side by side")
    assert (tmp_path / "flower_accuracy_vs_time.png").stat().st_size > 0
    assert _compare.rerender(tmp_path)["goals"] == report["goals"]


def test_the_relay_counts_the_bytes_each_way() -> None:
    # Prepare: an echo server that answers each message with twice its bytes
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            data = conn.recv(1024)
            conn.sendall(data * 2)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()

    # Execute
    with ByteRelay(server.getsockname()[1]) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as client:
            client.sendall(b"hello")
            received = b""
            while len(received) < 10:
                chunk = client.recv(1024)
                if not chunk:
                    break
                received += chunk
        thread.join(timeout=10)
        server.close()

        # Assert
        assert received == b"hellohello"
        assert relay.counts() == (5, 10)


def test_a_missing_flower_venv_says_how_to_make_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_deploy, "VENV", tmp_path / "no-venv")

    assert "benchmarks/flower/setup.sh" in (_deploy.venv_problem() or "")
    # the suite stops before its first section, naming the script and the flag
    assert _run.main(["--tiny", "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "benchmarks/flower/setup.sh" in err
    assert "--no-flower" in err
    assert not (tmp_path / "out").exists()
