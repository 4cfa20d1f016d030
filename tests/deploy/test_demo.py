"""``python -m deploy.demo``, the README's first command, runs a study's job to its end."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from deploy.demo import DEMO_SPEC, main


def _small_spec(tmp_path: Path, updates: int) -> Path:
    text = DEMO_SPEC.read_text(encoding="utf-8")
    assert "target_updates = 60" in text
    path = tmp_path / "small.toml"
    path.write_text(text.replace("target_updates = 60", f"target_updates = {updates}"))
    return path


@pytest.mark.e2e
def test_the_demo_trains_the_job_of_its_spec_and_reports_every_hospital(tmp_path: Path) -> None:
    # Prepare: the demo's study, stopped after 8 updates
    spec = _small_spec(tmp_path, updates=8)
    out = io.StringIO()

    status = main(["--state-dir", str(tmp_path / "run"), "--spec", str(spec)], out=out)

    printed = out.getvalue()
    assert status == 0, printed
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["job"], summary["stop_reason"]) == ("heart-disease-demo", "target_updates")
    assert summary["updates_applied"] == 8
    assert sum(c["updates"] for c in summary["clients"]) == 8
    # every hospital scored the final model on its held-out rows: 263 rows in all
    held_out = {c["site"]: c["final_metrics"]["n_samples"] for c in summary["clients"]}
    assert held_out == {"cleveland": 104, "hungary": 97, "switzerland": 16, "va-long-beach": 46}
    assert summary["hefl"]["n_samples"] == summary["centralized"]["n_samples"] == 263
    assert {"accuracy", "auroc"} <= set(summary["plaintext_federated"])
    assert "hefl (encrypted, asynchronous)" in printed
    assert "/v1/jobs/heart-disease-demo/status" in printed
    # the operator page: its URL and the 0600 file of its viewer token, never the token
    token_file = tmp_path / "run" / "viewer-token"
    token = token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "run" / "admin-key").stat().st_mode & 0o777 == 0o600
    assert "/ui (open it in a browser)" in printed
    assert str(token_file) in printed
    assert token not in printed
    for log in (tmp_path / "run" / "logs").iterdir():
        assert token not in log.read_text(errors="replace"), log.name


def test_a_spec_with_problems_is_one_message_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('name = "Bad Name"\n')

    status = main(["--state-dir", str(tmp_path / "run"), "--spec", str(spec)])

    assert status == 2
    assert capsys.readouterr().err.startswith("deploy.demo: ")
    assert not (tmp_path / "run").exists()


def test_a_state_directory_the_demo_did_not_make_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")

    with pytest.raises(SystemExit, match="was not made by the demo"):
        main(["--state-dir", str(mine)])

    assert (mine / "notes.txt").read_text() == "keep"
