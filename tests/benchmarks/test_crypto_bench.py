"""The crypto benchmark's quick mode runs and writes a well-formed report (no timings checked)."""

import json
from pathlib import Path

import pytest

from benchmarks import crypto_bench


def test_quick_crypto_benchmark_writes_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = crypto_bench.main(["--quick", "--out-dir", str(tmp_path)])
    report = json.loads((tmp_path / "crypto_bench.json").read_text())
    assert report["rows"] == payload["rows"]
    encodings = [r["encoding"] for r in report["rows"]]
    assert any(e.startswith("hefl") for e in encodings)
    assert any(e.startswith("ts.ckks_vector") for e in encodings)
    for row in report["rows"]:
        assert row["update_bytes_per_param"] > 0
        assert row["max_abs_error"] < 1e-5
    hefl = next(r for r in report["rows"] if r["encoding"].startswith("hefl"))
    assert hefl["update_bytes_per_param"] < 8.5
    assert "| encoding |" in capsys.readouterr().out
