"""After a little real training the server's disk and memory hold no secret key, and no log
of any role holds a credential (keyauth, fl_server and the fl_client CLI under uvicorn)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.enrollment import enrollment_token
from harness.parties import enroll
from harness.secret_search import search_files, search_memory, secret_key_needles
from harness.services import keyauth_service, new_admin_key, server_service
from harness.studies import study_json

pytestmark = pytest.mark.e2e

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}")


def _cli(args: list[str], state: Path, log: Path, stdin: str = "") -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLCLIENT_")}
    env["FLCLIENT_STATE_DIR"] = str(state)
    done = subprocess.run(
        [sys.executable, "-m", "fl_client", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    with log.open("a") as out:
        out.write(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not os.access("/proc/self/mem", os.R_OK), reason="needs /proc/PID/mem")
def test_no_secret_key_at_the_server_and_no_credential_in_any_log(tmp_path: Path) -> None:
    # Prepare: keyauth, a server, a hospital enrolled and trained through the CLI.
    admin = new_admin_key()
    client_log = tmp_path / "client.log"
    state = tmp_path / "client-state"
    with keyauth_service(
        tmp_path / "keyauth", admin, tmp_path / "keyauth.log", profile="test-n2048"
    ) as keyauth:
        probe = enroll(keyauth.url, admin, "probe")  # holds the same epoch's secret key
        enrollment = enrollment_token(keyauth.url, admin, "switzerland")
        with server_service(keyauth.url, tmp_path / "server", tmp_path / "server.log") as server:
            admin_access = admin_token(keyauth.url, admin)
            spec = study_json(
                "swiss",
                profile="test-n2048",
                inputs=13,
                training={"local_steps": 4},
                target_updates=3,
            )
            create_job(server.url, admin_access, spec)
            _cli(
                ["enroll", "--keyauth", keyauth.url, "--token", "-", "--json"],
                state,
                client_log,
                stdin=enrollment + "\n",
            )
            _cli(
                [
                    "train",
                    "--job",
                    "swiss",
                    "--server",
                    server.url,
                    "--data",
                    "heart-disease",
                    "--site",
                    "switzerland",
                    "--json",
                ],
                state,
                client_log,
            )
            viewer = viewer_token(keyauth.url, admin)
            status = read_status(server.url, viewer, "swiss")
            assert status["state"] == "done"
            needles = secret_key_needles(probe.secret_context, probe.profile)

            # Execute: the live processes' memory (the server after training; keyauth as
            # the positive control that the search finds a key where there is one).
            assert server.process is not None
            assert keyauth.process is not None
            server_hits, server_scanned = search_memory(server.process.pid, needles)
            keyauth_hits, _ = search_memory(keyauth.process.pid, needles)
        server_disk_hits, server_files = search_files(tmp_path / "server", needles)
        keyauth_disk_hits, _ = search_files(tmp_path / "keyauth", needles)

    # Assert: the secret key is nowhere at the server.
    assert server_scanned > 10 * 2**20
    assert server_files > 0
    assert keyauth_hits > 0, "the memory search must find the key where it is"
    assert keyauth_disk_hits > 0, "the file search must find the key where it is"
    assert server_hits == 0
    assert server_disk_hits == 0

    # Assert: no credential in the logs of the three roles.
    credential = json.loads((state / "credential.json").read_text())
    secrets = [
        admin,
        admin_access,
        viewer,
        enrollment,
        credential["client_secret"],
        probe.client_secret,
        probe.token,
    ]
    for log in (tmp_path / "keyauth.log", tmp_path / "server.log", client_log):
        text = log.read_bytes()
        assert text, log
        for secret in secrets:
            assert secret.encode() not in text, (log.name, "holds a credential")
        assert not JWT.search(text), (log.name, "holds an access token")
        assert not any(n in text for n in needles)


def test_the_client_cli_refuses_plain_http_to_another_host(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLCLIENT_")}
    env["FLCLIENT_STATE_DIR"] = str(tmp_path / "state")
    for args in (
        ["train", "--server", "http://10.9.8.7:8800"],
        ["enroll", "--keyauth", "http://hospital-ka.example:8700", "--token", "x"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "fl_client", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "--allow-insecure-http" in done.stderr
    assert not (tmp_path / "state").exists()
