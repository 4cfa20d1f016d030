"""A hospital spends its privacy budget against real keyauth and fl_server, and stops."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import crypto
import hefl_study
from fl_client import ClientSettings, Runner, enroll
from fl_client.errors import PrivacyBudgetSpentError
from fl_client.output import Reporter
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.enrollment import enrollment_token
from harness.services import keyauth_service, server_service
from harness.studies import study_mapping

pytestmark = pytest.mark.e2e

ADMIN_KEY = "fl-client-dp-e2e-admin-" + "k" * 20
PRIVACY = {"epsilon": 2.0, "delta": 1e-5, "max_grad_norm": 1.0, "rounds": 3}


@pytest.fixture(scope="module")
def keyauth_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("keyauth")
    with keyauth_service(root / "state", ADMIN_KEY, root / "keyauth.log") as keyauth:
        yield keyauth.url


def _private_heart_study(name: str) -> str:
    raw = study_mapping(
        name,
        profile=crypto.DEFAULT_PROFILE.name,
        inputs=13,
        training={"lr": 0.1, "batch_size": 16, "local_steps": 4},
        target_updates=100,
    )
    spec = hefl_study.spec_from_mapping({**raw, "privacy": PRIVACY})
    return hefl_study.spec_to_json(spec)


def test_a_hospital_spends_its_budget_stops_and_its_epsilon_is_in_status(
    keyauth_url: str, tmp_path: Path
) -> None:
    # Prepare: a job of 100 updates whose hospitals may each train 3 private rounds
    root = tmp_path
    with server_service(
        keyauth_url, root / "state", root / "fl_server.log", client_updates_per_minute="0"
    ) as server:
        create_job(server.url, admin_token(keyauth_url, ADMIN_KEY), _private_heart_study("dp"))
        settings = ClientSettings(
            state_dir=root / "cleveland",
            keyauth_url=keyauth_url,
            server_url=server.url,
            job="dp",
            data="heart-disease",
            site="cleveland",
            output="quiet",
        )
        enroll(settings, enrollment_token(keyauth_url, ADMIN_KEY, "cleveland"))

        # Execute: train until the budget stops the hospital, then start it again by CLI
        with (
            Runner(settings, reporter=Reporter("quiet")) as runner,
            pytest.raises(PrivacyBudgetSpentError),
        ):
            runner.run()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLCLIENT_")}
        env["FLCLIENT_STATE_DIR"] = str(settings.state_dir)
        cli = [sys.executable, "-m", "fl_client", "train", "--server", server.url, "--job", "dp"]
        again = subprocess.run(
            [*cli, "--data", "heart-disease", "--site", "cleveland", "--output", "quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        status = read_status(server.url, viewer_token(keyauth_url, ADMIN_KEY), "dp")
        prometheus = httpx.get(f"{server.url}/metrics").text

    # Assert: three updates applied, none after; ε spent shows per client and in Prometheus
    assert status["updates_applied"] == 3, status
    assert status["state"] == "training"
    (client,) = status["clients"].values()
    assert client["updates_applied"] == 3
    privacy = client["privacy"]
    assert 1.0 < privacy["epsilon"] <= PRIVACY["epsilon"]
    assert privacy["delta"] == PRIVACY["delta"]
    assert privacy["target_epsilon"] == PRIVACY["epsilon"]
    assert f'hefl_server_privacy_epsilon_max{{job="dp"}} {privacy["epsilon"]}' in prometheus
    assert again.returncode == 1
    errors = [line for line in again.stderr.splitlines() if line.startswith("hefl-client:")]
    assert len(errors) == 1, again.stderr
    assert "spent its privacy budget on job 'dp'" in errors[0]
    assert "after 3 rounds" in errors[0]
