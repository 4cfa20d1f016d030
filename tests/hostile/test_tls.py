"""TLS as deploy/ sets it up: a private CA from make-certs.sh, both services on https.

Clients of one key epoch share its secret key, so an upload's confidentiality against
other hospitals rests on TLS: the whole flow (admin token, enrollment, training, status)
must work over https with the CA trusted, and fail closed without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import crypto
from harness.admin import admin_token, create_job
from harness.enrollment import client_command, enroll_hospital
from harness.services import (
    ServiceProcess,
    Tls,
    keyauth_service,
    new_admin_key,
    server_service,
)
from harness.studies import study_json

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="make-certs.sh needs openssl"),
]

ROOT = Path(__file__).resolve().parents[2]
JOB = "tls"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    certs = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "make-certs.sh"), str(certs), "localhost"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert oct((certs / "ca.key").stat().st_mode & 0o777) == "0o600"
    return Tls(certs / "localhost.pem", certs / "localhost.key", certs / "ca.pem")


@pytest.fixture(scope="module")
def services(
    tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, ServiceProcess, str]]:
    work = tmp_path_factory.mktemp("tls")
    admin_key = new_admin_key()
    with (
        keyauth_service(work / "keyauth", admin_key, work / "keyauth.log", tls=tls) as keyauth,
        server_service(
            keyauth.url.replace("127.0.0.1", "localhost"),
            work / "server",
            work / "server.log",
            tls=tls,
        ) as server,
    ):
        # The administrator's flow over https too: a token from keyauth, then the job.
        verify = tls.client_context()
        keyauth_url = keyauth.url.replace("127.0.0.1", "localhost")
        token = admin_token(keyauth_url, admin_key, verify=verify)
        spec = study_json(JOB, profile=crypto.DEFAULT_PROFILE.name, inputs=13, target_updates=2)
        create_job(server.url.replace("127.0.0.1", "localhost"), token, spec, verify=verify)
        yield keyauth, server, admin_key


def client(*args: str, ca: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLCLIENT_", "SSL_CERT"))}
    if ca is not None:
        env["SSL_CERT_FILE"] = str(ca)
    return subprocess.run(
        client_command(*args),
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_the_whole_flow_runs_over_https_with_the_private_ca(
    services: tuple[ServiceProcess, ServiceProcess, str], tls: Tls, tmp_path: Path
) -> None:
    keyauth, server, admin_key = services
    keyauth_url = keyauth.url.replace("127.0.0.1", "localhost")  # the name on the certificate
    server_url = server.url.replace("127.0.0.1", "localhost")
    state = str(tmp_path / "h1")

    enroll_hospital(keyauth_url, admin_key, "h1", tmp_path / "h1", tls=tls)
    trained = client(
        "train", "--job", JOB, "--server", server_url, "--data", "heart-disease",
        "--site", "cleveland", "--state-dir", state, "--max-rounds", "2", "--json",
        ca=tls.cafile,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    updates = [e for e in map(json.loads, trained.stdout.splitlines()) if e["event"] == "update"]
    assert len(updates) == 2
    # the status is for token holders: the enrolled hospital reads it with its own token
    shown = client(
        "status", "--job", JOB, "--server", server_url, "--state-dir", state, "--json",
        ca=tls.cafile,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert (status["state"], status["updates_applied"]) == ("done", 2)


def test_without_the_ca_the_client_refuses_the_server(
    services: tuple[ServiceProcess, ServiceProcess, str], tmp_path: Path
) -> None:
    _, server, _ = services
    server_url = server.url.replace("127.0.0.1", "localhost")
    answer = client("status", "--server", server_url, "--max-attempts", "1", ca=None)
    assert answer.returncode != 0
    assert "certificate" in answer.stderr.lower()


def test_plain_http_to_the_tls_port_gets_no_answer(
    services: tuple[ServiceProcess, ServiceProcess, str],
) -> None:
    _, server, _ = services
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/v1/status", timeout=5)
