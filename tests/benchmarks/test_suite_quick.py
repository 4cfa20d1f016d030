"""The benchmark suite runs end to end at its smallest size and writes a complete report.

Checks the report's structure (files, sections, table rows), never its timings or accuracies.
"""

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from benchmarks.suite import _run


@pytest.mark.e2e
def test_suite_writes_every_section(tmp_path: Path) -> None:
    # Prepare / Execute: the in-test size starts the real services for a few updates
    _run.run("tiny", tmp_path)

    # Assert: files
    for name in ("report.md", "report.json", "accuracy_vs_bytes.png", "accuracy_vs_time.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()

    # section 1: every method of the tiny plan, with bytes and an accuracy
    methods = [r["method"] for r in report["bytes"]["rows"]]
    assert methods[:3] == ["plaintext sync FedAvg", "plaintext async (turns)", "hefl dense"]
    assert "hefl top-k 10% (EF)" in methods
    assert any(m.startswith("ts.ckks_vector") for m in methods)
    for row in report["bytes"]["rows"]:
        assert row["bytes_per_update"] > 0
        assert 0 <= row["final_accuracy"] <= 1
        assert f"| {row['method']} |" in markdown
    assert set(report["bytes"]["goals"]) == {
        "within_half_point_at_10pct_bytes",
        "fewer_bytes_than_fedavg_at_equal_accuracy",
    }

    # section 1b: the model of 1M parameters, dense and the compact profile's top-k
    large = report["large"]
    assert large["rows"][0]["method"] == "hefl dense"
    assert large["rows"][0]["shared_params"] >= 1_000_000
    assert any(r["method"].endswith(", n2048-s26") for r in large["rows"])
    assert isinstance(large["goal"]["met"], bool)

    # sections 2 and 3: the live run applied its updates; both goals are evaluated
    time_ = report["time"]
    assert time_["live"]["status"]["updates_applied"] == _run.PLANS["tiny"].live_updates
    assert isinstance(time_["time_to_target"]["met"], bool)
    assert isinstance(time_["he_overhead"]["met"], bool)
    assert time_["curves"][0]["name"] == "hefl async (live services)"

    # section 4 and 5
    assert {r["model"] for r in report["scale"]["rows"]} == set(_run.PLANS["tiny"].scale_models)
    flamby = [r["method"] for r in time_["flamby"]["rows"]]
    assert flamby[0] == "pooled (centralized)"
    assert sum(m.endswith(" alone") for m in flamby) == 4
    assert flamby[-1] == "hefl async (live services)"
    # section 7: both flows, counted on the wire (2 and 6 requests per update)
    latency = {(r["flow"], r["rtt_ms"]): r for r in report["latency"]["rows"]}
    assert latency[("combined", 50.0)]["requests_per_update"] == 2
    assert latency[("separate", 50.0)]["requests_per_update"] == 6
    assert isinstance(report["latency"]["goals"]["round_trips"]["met"], bool)
    for heading in ("## 1.", "## 1b.", "## 2.", "## 3.", "## 4.", "## 5.", "## 7."):
        assert heading in markdown
