"""``hefl-admin`` against real keyauth and fl_server under uvicorn: a job's whole life."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

import crypto
from harness.services import keyauth_service, new_admin_key, server_service
from hefl_study import load_spec
from tests.fl_server.helpers import LAYOUT_TENSORS, Hospital

pytestmark = pytest.mark.e2e

PROFILE = "test-n2048"
SPEC = f"""
name = "icu-mortality"
description = "Who dies in the ICU?"
profile = "{PROFILE}"

[model]
name = "logistic"

[data]
label = "died"
task = "binary"
classes = [0, 1]

[[data.features]]
name = "age"
type = "numeric"

[stop]
target_updates = 40
metric = "auroc"
value = 0.9
"""


@dataclass
class Deployment:
    keyauth_url: str
    server_url: str
    admin_key: str
    spec: Path

    def admin(self, *args: str, admin_key: str | None = None) -> subprocess.CompletedProcess[str]:
        """``python -m hefl_admin ARGS``, as the administrator runs it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTH_")}
        env["KEYAUTH_ADMIN_KEY"] = admin_key or self.admin_key
        command = ["--url", self.keyauth_url, "--server-url", self.server_url, *args]
        return subprocess.run(
            [sys.executable, "-m", "hefl_admin", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.admin(*args)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return result.stdout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("admin-e2e")
    admin_key = new_admin_key()
    spec = root / "icu.toml"
    spec.write_text(SPEC, encoding="utf-8")
    with (
        keyauth_service(root / "keyauth", admin_key, root / "keyauth.log", profile=PROFILE) as ka,
        server_service(ka.url, root / "server", root / "server.log") as server,
    ):
        yield Deployment(ka.url, server.url, admin_key, spec)


def test_a_job_from_creation_to_stop(deployment: Deployment) -> None:
    sha256 = load_spec(deployment.spec).sha256

    # Create, and create the same study again.
    created = deployment.ok("job", "create", str(deployment.spec))
    again = deployment.ok("job", "create", str(deployment.spec))
    # List and show.
    listed = deployment.ok("job", "list").splitlines()
    shown = deployment.ok("job", "show", "icu-mortality")
    status = json.loads(deployment.ok("job", "show", "icu-mortality", "--json"))
    # Pause, resume, stop; resuming a done job is refused.
    paused = deployment.ok("job", "pause", "icu-mortality")
    resumed = deployment.ok("job", "resume", "icu-mortality")
    stopped = deployment.ok("job", "stop", "icu-mortality")
    refused = deployment.admin("job", "resume", "icu-mortality")
    final = json.loads(deployment.ok("job", "list", "--json"))
    key_id = httpx.get(f"{deployment.keyauth_url}/v1/keys/key-id").json()["key_id"]

    assert created.splitlines()[0] == "created job icu-mortality"
    assert f"key_id: {key_id}" in " ".join(created.split())
    assert f"key_id: {key_id}" in " ".join(shown.split())
    assert f"spec_sha256: {sha256}" in created
    assert "state:       waiting_for_initial_model" in created
    assert f"profile:     {PROFILE}" in created
    assert (
        again.splitlines()[0] == "job icu-mortality exists already with this spec: nothing changed"
    )
    assert listed[0].split() == ["NAME", "STATE", "VERSION", "UPDATES", "STOP_REASON", "CREATED_AT"]
    assert listed[1].split()[:5] == ["icu-mortality", "waiting_for_initial_model", "0", "0/40", "-"]
    assert "hospitals:\n  none has been seen yet" in shown
    rules = shown[shown.index("stop rules") :].splitlines()[2:]
    assert rules[0].split() == ["target_updates", "0", "40", "no"]
    assert rules[1].split() == [
        "target_metric", "-", "(0", "hospitals,", "2", "needed)", "auroc", ">=", "0.9", "no"
    ]  # fmt: skip
    assert (status["name"], status["spec_sha256"], status["key_epoch"], status["key_id"]) == (
        "icu-mortality",
        sha256,
        1,
        key_id,
    )
    assert [rule["rule"] for rule in status["stop_rules"]] == ["target_updates", "target_metric"]
    assert paused == "icu-mortality: paused\n"
    assert resumed == "icu-mortality: waiting_for_initial_model\n"
    assert stopped == "icu-mortality: done (stopped)\n"
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.startswith("hefl-admin: job_not_paused: ")
    assert [(j["name"], j["state"], j["stop_reason"]) for j in final] == [
        ("icu-mortality", "done", "stopped")
    ]


def test_another_spec_under_a_taken_name_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    deployment.ok("job", "create", str(deployment.spec))
    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace("value = 0.9", "value = 0.8"), encoding="utf-8")

    result = deployment.admin("job", "create", str(other))

    assert result.returncode == 1
    assert result.stderr.startswith("hefl-admin: job_exists: a job named 'icu-mortality' exists")
    assert load_spec(other).sha256 in result.stderr


def test_errors_are_one_line_and_an_exit_status(deployment: Deployment, tmp_path: Path) -> None:
    missing = deployment.admin("job", "show", "no-such-job")
    wrong_key = deployment.admin("job", "list", admin_key="not-the-admin-key-0123456789")
    bad_spec = tmp_path / "bad.toml"
    bad_spec.write_text(SPEC.replace(f'"{PROFILE}"', '"n1-s1"'), encoding="utf-8")
    invalid = deployment.admin("job", "create", str(bad_spec))

    assert (missing.returncode, missing.stderr.split(":")[:2]) == (
        1,
        ["hefl-admin", " job_not_found"],
    )
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.startswith("hefl-admin: admin_key_invalid: ")
    assert invalid.returncode == 2
    assert invalid.stderr.startswith(f"hefl-admin: {bad_spec} has 1 problem; nothing was sent:")
    assert "  profile: " in invalid.stderr
    for result in (missing, wrong_key, invalid):
        assert "Traceback" not in result.stderr


def test_a_profile_other_than_the_key_epochs_is_refused_by_the_server(
    deployment: Deployment, tmp_path: Path
) -> None:
    spec = tmp_path / "other-profile.toml"
    spec.write_text(
        SPEC.replace(f'"{PROFILE}"', '"n4096-s40"').replace("icu-mortality", "icu-2"),
        encoding="utf-8",
    )

    result = deployment.admin("job", "create", str(spec))

    assert result.returncode == 1
    assert result.stderr.startswith("hefl-admin: spec_invalid: ")


def test_each_role_is_refused_on_the_others_routes(deployment: Deployment) -> None:
    # Prepare: a job, a hospital's client token, and an administrator token.
    deployment.ok("job", "create", str(deployment.spec))
    token = deployment.ok("token", "create", "hospital-a", "--quiet").strip()
    with httpx.Client(timeout=10) as http:
        enrolled = http.post(f"{deployment.keyauth_url}/v1/enroll", json={"token": token}).json()
        credentials = {k: enrolled[k] for k in ("client_id", "client_secret")}
        client = http.post(f"{deployment.keyauth_url}/v1/token", json=credentials).json()
        admin = http.post(
            f"{deployment.keyauth_url}/v1/admin/token",
            headers={"X-Admin-Key": deployment.admin_key},
        ).json()

        # Execute: the client pauses a job, the administrator asks for a training slot.
        job = f"{deployment.server_url}/v1/jobs/icu-mortality"
        client_pauses = http.post(
            f"{job}/pause", headers={"Authorization": f"Bearer {client['access_token']}"}
        )
        admin_trains = http.post(
            f"{job}/slots", headers={"Authorization": f"Bearer {admin['access_token']}"}
        )
        admin_secret = http.get(
            f"{deployment.keyauth_url}/v1/keys/secret-context",
            headers={"Authorization": f"Bearer {admin['access_token']}"},
        )

    # Assert
    for refused in (client_pauses, admin_trains, admin_secret):
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "token_wrong_role"


def test_a_viewer_token_from_the_command_reads_the_status_and_nothing_else(
    deployment: Deployment,
) -> None:
    # Prepare: a job; the status is for token holders by default.
    deployment.ok("job", "create", str(deployment.spec))
    job = f"{deployment.server_url}/v1/jobs/icu-mortality"

    # Execute: what the operator runs to open the page, then what the page asks for.
    printed = deployment.ok("token", "viewer")
    short = json.loads(deployment.ok("token", "viewer", "--expires-in", "60", "--json"))
    too_long = deployment.admin("token", "viewer", "--expires-in", str(8 * 86_400))
    viewer = {"Authorization": f"Bearer {printed.strip()}"}
    with httpx.Client(timeout=10) as http:
        anonymous = http.get(f"{deployment.server_url}/v1/status")
        everything = http.get(f"{deployment.server_url}/v1/status", headers=viewer)
        one = http.get(f"{job}/status", headers=viewer)
        model = http.get(f"{job}/model", headers=viewer)
        stop = http.post(f"{job}/stop", headers=viewer)
        secret = http.get(f"{deployment.keyauth_url}/v1/keys/secret-context", headers=viewer)

    # Assert: one line, the token alone (so `> viewer.token` keeps just it)
    assert printed.count("\n") == 1
    assert printed.strip().count(".") == 2  # a JWT
    assert (short["token_type"], short["expires_in"]) == ("bearer", 60)
    assert too_long.returncode == 1
    assert (too_long.stdout, too_long.stderr.split(":")[1].strip()) == (
        "",
        "expires_in_out_of_range",
    )
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "token_missing")
    assert [j["name"] for j in everything.json()["jobs"]] == ["icu-mortality"]
    assert one.status_code == 200
    assert one.json()["name"] == "icu-mortality"
    for refused in (model, stop, secret):
        assert (refused.status_code, refused.json()["code"]) == (403, "token_wrong_role")


def test_a_repair_by_hand_removes_an_update_and_quarantines_until_released(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Prepare: a job of its own, and one enrolled hospital that sends an update.
    spec = tmp_path / "repair.toml"
    spec.write_text(SPEC.replace("icu-mortality", "icu-repair"), encoding="utf-8")
    deployment.ok("job", "create", str(spec))
    token = deployment.ok("token", "create", "hospital-r", "--quiet").strip()
    with httpx.Client(timeout=30) as http:
        enrolled = http.post(f"{deployment.keyauth_url}/v1/enroll", json={"token": token}).json()
        credentials = {k: enrolled[k] for k in ("client_id", "client_secret")}
        access = http.post(f"{deployment.keyauth_url}/v1/token", json=credentials).json()
        auth = {"Authorization": f"Bearer {access['access_token']}"}
        secret = http.get(f"{deployment.keyauth_url}/v1/keys/secret-context", headers=auth)
        profile = crypto.get_profile(PROFILE)
        layout = crypto.build_layout(LAYOUT_TENSORS, profile.block_size)
        hospital = Hospital(crypto.ClientCipher(secret.content, profile), layout)
        job = f"{deployment.server_url}/v1/jobs/icu-repair"
        http.put(f"{job}/layout", content=layout.to_json(), headers=auth).raise_for_status()
        initial = hospital.initial_model(hospital.model_values(0))
        http.put(f"{job}/initial-model", content=initial, headers=auth).raise_for_status()
        update_id, update = hospital.update(hospital.model_values(1), base_version=0)
        assert http.post(f"{job}/updates", content=update, headers=auth).status_code == 202

        # Execute
        repaired = deployment.ok("job", "repair", "icu-repair", "--update", str(update_id))
        refused = http.post(
            f"{job}/updates",
            content=hospital.update(hospital.model_values(2), base_version=2)[1],
            headers=auth,
        )
        shown = deployment.ok("job", "show", "icu-repair")
        released = deployment.ok("job", "release", "icu-repair", enrolled["client_id"])
        twice = deployment.admin("job", "release", "icu-repair", enrolled["client_id"])
        model = http.get(f"{job}/model", headers=auth)

    # Assert: version 2 is the initial model again, bit for bit.
    client_id = enrolled["client_id"]
    assert repaired.splitlines()[0] == (
        "repair 1 of job icu-repair: the model is at version 2 (1 version held the removed updates)"
    )
    assert repaired.splitlines()[2].split() == [str(update_id), "hospital-r", "1", "1", "yes"]
    assert refused.status_code == 403
    assert refused.json()["code"] == "client_quarantined"
    assert "\nrepairs (each removed update subtracted at its weight):\n" in shown
    assert f"  hospital-r  {client_id}" in shown
    assert released == f"released {client_id}: job icu-repair takes its updates again\n"
    assert twice.returncode == 1
    assert twice.stderr.startswith("hefl-admin: client_not_quarantined: ")
    version, values = hospital.decrypt_model(model.content)
    assert version == 2
    assert np.max(np.abs(values - hospital.model_values(0))) < 1e-4
