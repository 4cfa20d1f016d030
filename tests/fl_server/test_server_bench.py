"""The ingest benchmark's quick mode runs end to end and writes a well-formed report."""

import json
from pathlib import Path

import pytest

from benchmarks import server_ingest

pytestmark = pytest.mark.e2e


def test_quick_ingest_benchmark_writes_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = server_ingest.main(["--quick", "--out-dir", str(tmp_path)])

    report = json.loads((tmp_path / "server_ingest.json").read_text())
    assert report["http"] == payload["http"]
    assert report["params"] == 100_000
    assert report["raw_params_per_s"] > 0
    rows = [(row["shards"], row["uploaders"]) for row in report["http"]]
    assert rows == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [(s["uploaders"], s["shards"]) for s in report["shard_speedup"]] == [(1, 2), (2, 2)]
    for row in report["http"]:
        (run,) = row["measurements"]
        assert run["updates"] == 3 * row["uploaders"]
        assert run["version"] == run["updates"] + 1  # the warm-up update, then every one
        assert row["params_per_s"] > 0
        # the CPU is accounted to the processes that spent it: shards exist, and do work
        assert len(run["cpu_seconds"]["per_shard"]) == row["shards"]
        assert run["cpu_seconds"]["shards"] > 0
        assert row["cpu_ms_per_update"]["total"] >= row["cpu_ms_per_update"]["shards"]
    for speedup in report["shard_speedup"]:
        assert speedup["ratio_ceiling"] > 0
    assert "| HTTP: POST /v1/jobs/{job}/updates until 202 (durable) |" in capsys.readouterr().out
