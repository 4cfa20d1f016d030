"""keyauth under real uvicorn: the README command, a kill -9, and a restart on the same state."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import crypto
from harness.services import free_port, keyauth_service

pytestmark = pytest.mark.e2e

ADMIN_KEY = "e2e-admin-key-" + "k" * 24


def keyauth_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTH_")}
    env.update({"KEYAUTH_STATE_DIR": str(state_dir), "KEYAUTH_ADMIN_KEY": ADMIN_KEY, **extra})
    return env


def hefl_admin(url: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "hefl_admin", "--url", url, *args],
        env=keyauth_env(Path("unused")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_enroll_download_then_survive_kill_9(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    log = tmp_path / "keyauth.log"

    # First life: token (admin CLI) -> enroll -> access token -> secret context.
    with keyauth_service(state_dir, ADMIN_KEY, log) as service:
        url, process = service.url, service.process
        assert process is not None
        token = hefl_admin(url, "token", "create", "hospital-a", "--quiet").strip()
        with httpx.Client(base_url=url, timeout=10) as http:
            enrolled = http.post("/v1/enroll", json={"token": token}).json()
            credentials = {k: enrolled[k] for k in ("client_id", "client_secret")}
            access = http.post("/v1/token", json=credentials).json()["access_token"]
            secret = http.get(
                "/v1/keys/secret-context", headers={"Authorization": f"Bearer {access}"}
            )
            public = http.get("/v1/keys/public-context")
            verification = http.get("/v1/keys/verification-key").json()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    assert process.returncode == -signal.SIGKILL
    assert secret.status_code == 200
    profile = crypto.get_profile(secret.headers["x-hefl-profile"])
    assert crypto.ClientCipher(secret.content, profile)
    assert crypto.ServerCipher(public.content, profile)

    # Second life on the same state: same keys, same client, same credentials.
    with keyauth_service(state_dir, ADMIN_KEY, log) as service:
        url = service.url
        with httpx.Client(base_url=url, timeout=10) as http:
            reused = http.post("/v1/enroll", json={"token": token})
            fresh = http.post("/v1/token", json=credentials)
            old_token_secret = http.get(
                "/v1/keys/secret-context", headers={"Authorization": f"Bearer {access}"}
            )
            public_after = http.get("/v1/keys/public-context")
            verification_after = http.get("/v1/keys/verification-key").json()
        listing = hefl_admin(url, "clients", "list")

    assert reused.status_code == 403
    assert reused.json()["code"] == "enrollment_token_used"
    assert fresh.status_code == 200
    assert sha(old_token_secret.content) == sha(secret.content)
    assert sha(public_after.content) == sha(public.content)
    assert verification_after == verification
    assert enrolled["client_id"] in listing
    assert "hospital-a" in listing
    logged = log.read_text()
    for secret_value in (token, enrolled["client_secret"], access, ADMIN_KEY):
        assert secret_value not in logged


def test_refuses_to_start_exposed_with_the_placeholder_key(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = keyauth_env(state_dir, KEYAUTH_HOST="0.0.0.0", KEYAUTH_ADMIN_KEY="change-me")

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "keyauth.app:app",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "refusing to serve on non-loopback host" in result.stderr
    assert not state_dir.exists()
