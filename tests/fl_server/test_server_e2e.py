"""fl_server under real uvicorn, with a real keyauth: two jobs, concurrent hospitals, kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest

import crypto
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.parties import job_url
from harness.services import ServiceProcess, free_port, keyauth_service, server_service
from harness.studies import study_json
from tests.fl_server.helpers import LAYOUT_TENSORS, PROFILE, Hospital

pytestmark = pytest.mark.e2e

ADMIN_KEY = "e2e-admin-key-" + "k" * 24
Values = npt.NDArray[np.float64]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYAUTH_", "FLSERVER_"))}
    env.update(extra)
    return env


@dataclass
class Enrolled:
    client_id: str
    token: str
    hospital: Hospital

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Keyauth:
    url: str
    admin: str  # an administrator's access token


@pytest.fixture(scope="module")
def keyauth_service_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyauth]:
    root = tmp_path_factory.mktemp("keyauth")
    with keyauth_service(root / "state", ADMIN_KEY, root / "keyauth.log", profile=PROFILE) as ka:
        yield Keyauth(ka.url, admin_token(ka.url, ADMIN_KEY))


@pytest.fixture(scope="module")
def keyauth(keyauth_service_: Keyauth) -> str:
    return keyauth_service_.url


@pytest.fixture(scope="module")
def admin(keyauth_service_: Keyauth) -> str:
    return keyauth_service_.admin


def enroll(keyauth: str, name: str) -> Enrolled:
    """A hospital enrolled the way protocol.md says, with its secret context."""
    with httpx.Client(base_url=keyauth, timeout=30) as http:
        issued = http.post(
            "/v1/enrollment-tokens", json={"client_name": name}, headers={"X-Admin-Key": ADMIN_KEY}
        ).json()
        creds = http.post("/v1/enroll", json={"token": issued["token"]}).json()
        access = http.post(
            "/v1/token",
            json={"client_id": creds["client_id"], "client_secret": creds["client_secret"]},
        ).json()["access_token"]
        secret = http.get("/v1/keys/secret-context", headers={"Authorization": f"Bearer {access}"})
    profile = crypto.get_profile(secret.headers["X-Hefl-Profile"])
    layout = crypto.build_layout(LAYOUT_TENSORS, profile.block_size)
    cipher = crypto.ClientCipher(secret.content, profile)
    key_epoch = int(secret.headers["X-Hefl-Key-Epoch"])
    return Enrolled(creds["client_id"], access, Hospital(cipher, layout, key_epoch))


@pytest.fixture(scope="module")
def hospitals(keyauth: str) -> list[Enrolled]:
    return [enroll(keyauth, name) for name in ("hospital-a", "hospital-b", "hospital-c")]


def fl_server(keyauth: str, state_dir: Path, log: Path, **settings: str) -> ServiceProcess:
    """A running fl_server; ``settings`` are further ``FLSERVER_*`` values (lower-case names)."""
    # uvicorn_args and tls named, so that ``settings`` (all str) can only be FLSERVER_* values
    return server_service(
        keyauth,
        state_dir,
        log,
        uvicorn_args=(),
        tls=None,
        client_updates_per_minute="0",
        checkpoint_every="4",
        **settings,
    )


def start_job(url: str, admin: str, job: str, first: Enrolled, initial: Values) -> None:
    """The administrator creates ``job``; ``first`` puts its layout and initial model."""
    create_job(url, admin, study_json(job, profile=PROFILE))
    hospital = first.hospital
    with httpx.Client(timeout=30) as http:
        layout = http.put(
            job_url(url, job, "/layout"), content=hospital.layout.to_json(), headers=first.auth
        )
        assert layout.status_code == 201, layout.text
        model = http.put(
            job_url(url, job, "/initial-model"),
            content=hospital.initial_model(initial),
            headers=first.auth,
        )
        assert model.status_code == 201, model.text


def pull(http: httpx.Client, job: str, client: Enrolled, at_least: int = 0) -> tuple[int, Values]:
    """Job ``job``'s model, once the server serves version ``at_least`` or later."""
    deadline = time.monotonic() + 10
    while True:
        response = http.get(job_url("", job, "/model"), headers=client.auth)
        assert response.status_code == 200, response.text
        version, values = client.hospital.decrypt_model(response.content)
        if version >= at_least or time.monotonic() > deadline:
            return version, values
        time.sleep(0.02)


@dataclass
class Ledger:
    """What the server acknowledged: the plaintext update and the weight it was applied with."""

    acked: dict[str, tuple[float, Values]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, update_id: str, weight: float, values: Values) -> None:
        with self.lock:
            assert update_id not in self.acked or self.acked[update_id][0] == weight
            self.acked[update_id] = (weight, values)

    def model(self, initial: Values) -> Values:
        return initial + sum((w * v for w, v in self.acked.values()), np.zeros_like(initial))


def test_concurrent_hospitals_build_each_jobs_plaintext_sum(
    keyauth: str, admin: str, hospitals: list[Enrolled], tmp_path: Path
) -> None:
    # Prepare: two jobs; every hospital trains in both at once.
    log = tmp_path / "server.log"
    jobs = ("alpha", "beta")
    initial = {job: hospitals[0].hospital.random_values(k, scale=0.5) for k, job in enumerate(jobs)}
    ledgers = {job: Ledger() for job in jobs}
    rounds = 4
    errors: list[BaseException] = []

    def train(index: int, client: Enrolled, job: str, url: str) -> None:
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                for r in range(rounds):
                    version, _ = pull(http, job, client)
                    values = client.hospital.random_values(1000 * (index + 1) + r)
                    uid, envelope = client.hospital.update(values, base_version=version)
                    response = http.post(
                        job_url("", job, "/updates"), content=envelope, headers=client.auth
                    )
                    assert response.status_code == 202, response.text
                    body = response.json()
                    assert body["update_id"] == str(uid)
                    assert body["staleness"] >= 0
                    ledgers[job].add(body["update_id"], body["weight"], values)
        except BaseException as exc:
            errors.append(exc)

    # Execute
    with fl_server(keyauth, tmp_path / "state", log) as server:
        url = server.url
        for job in jobs:
            start_job(url, admin, job, hospitals[0], initial[job])
        threads = [
            threading.Thread(target=train, args=(i, c, job, url))
            for i, c in enumerate(hospitals)
            for job in jobs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        n = len(hospitals) * rounds
        with httpx.Client(base_url=url, timeout=30) as http:
            models = {job: pull(http, job, hospitals[0], at_least=n) for job in jobs}
            viewer = viewer_token(keyauth, ADMIN_KEY)
            statuses = {job: read_status(url, viewer, job) for job in jobs}
            metrics = http.get("/metrics").text

    # Assert: each job is its initial model plus its own acknowledged updates.
    profile = hospitals[0].hospital.profile
    for job in jobs:
        version, model = models[job]
        status = statuses[job]
        assert version == n
        assert len(ledgers[job].acked) == n
        bound = profile.error_bound(n + 1)
        assert np.max(np.abs(model - ledgers[job].model(initial[job]))) <= bound
        assert status["updates_applied"] == n
        assert sum(status["staleness_histogram"].values()) == n
        assert {c["updates_applied"] for c in status["clients"].values()} == {rounds}
        assert f'hefl_server_updates_applied_total{{job="{job}"}} {float(n)}' in metrics
    logged = log.read_text()
    assert all(c.token not in logged for c in hospitals)
    assert admin not in logged


def test_kill_9_loses_no_acknowledged_update_and_applies_none_twice(
    keyauth: str, admin: str, hospitals: list[Enrolled], tmp_path: Path
) -> None:
    # Prepare
    state_dir = tmp_path / "state"
    log = tmp_path / "server.log"
    client = hospitals[1]
    hospital = client.hospital
    initial = hospital.random_values(1, scale=0.5)
    ledger = Ledger()
    sent: list[tuple[str, bytes, Values]] = []
    job = "crash"

    def push(http: httpx.Client, envelope: bytes) -> httpx.Response:
        return http.post(job_url("", job, "/updates"), content=envelope, headers=client.auth)

    # First life: four updates, then the served model; kill -9.
    with fl_server(keyauth, state_dir, log) as server:
        url = server.url
        start_job(url, admin, job, client, initial)
        with httpx.Client(base_url=url, timeout=30) as http:
            for k in range(4):
                values = hospital.random_values(100 + k)
                uid, envelope = hospital.update(values, base_version=k)
                body = push(http, envelope).json()
                ledger.add(body["update_id"], body["weight"], values)
                sent.append((str(uid), envelope, values))
            pull(http, job, client, at_least=4)
            served = http.get(job_url("", job, "/model"), headers=client.auth)
        server.kill()

    # Second life: the same model, byte for byte; then a stream killed mid-flight.
    stop = threading.Event()
    in_flight: list[tuple[str, bytes, Values]] = []

    def stream(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            k = 0
            while not stop.is_set():
                try:
                    model = http.get(job_url("", job, "/model"), headers=client.auth)
                    version = int(model.headers["X-Hefl-Model-Version"])
                    values = hospital.random_values(200 + k)
                    uid, envelope = hospital.update(values, base_version=version)
                    in_flight[:] = [(str(uid), envelope, values)]
                    body = push(http, envelope).json()
                except httpx.TransportError:
                    return  # the server died under this request
                ledger.add(body["update_id"], body["weight"], values)
                in_flight.clear()
                k += 1

    with fl_server(keyauth, state_dir, log) as server:
        url = server.url
        again = httpx.get(job_url(url, job, "/model"), headers=client.auth)
        assert again.content == served.content
        assert again.headers["ETag"] == served.headers["ETag"]
        pusher = threading.Thread(target=stream, args=(url,))
        pusher.start()
        while len(ledger.acked) < 10 or not in_flight:  # kill with an update on the wire
            time.sleep(0.001)
        server.kill()
        stop.set()
        pusher.join()

    # Third life: every acknowledged update is there exactly once; retries are answered.
    with (
        fl_server(keyauth, state_dir, log) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        recovered = http.get(job_url("", job), headers=client.auth).json()["version"]
        assert recovered in (len(ledger.acked), len(ledger.acked) + len(in_flight))
        for update_id, envelope, values in in_flight:  # the client retries what got no answer
            retried = push(http, envelope)
            assert retried.status_code == 202, retried.text
            ledger.add(update_id, retried.json()["weight"], values)
        update_id, envelope, _ = sent[1]
        duplicate = push(http, envelope).json()
        version, model = pull(http, job, client, at_least=len(ledger.acked))
        status = read_status(server.url, viewer_token(keyauth, ADMIN_KEY), job)

    assert duplicate["duplicate"] is True
    assert (duplicate["update_id"], duplicate["version"]) == (update_id, 2)
    assert version == len(ledger.acked) == status["updates_applied"]
    bound = hospital.profile.error_bound(len(ledger.acked) + 1)
    assert np.max(np.abs(model - ledger.model(initial))) <= bound


def test_a_client_revoked_at_keyauth_is_refused_within_the_refresh(
    keyauth: str, admin: str, hospitals: list[Enrolled], tmp_path: Path
) -> None:
    leaving = enroll(keyauth, "hospital-leaving")
    job = "revoke"
    with fl_server(
        keyauth, tmp_path / "state", tmp_path / "server.log", revocation_refresh="0.2"
    ) as server:
        url = server.url
        start_job(url, admin, job, hospitals[0], hospitals[0].hospital.random_values(0))
        hospital = leaving.hospital
        with httpx.Client(base_url=url, timeout=30) as http:
            ok = http.post(
                job_url("", job, "/updates"),
                content=hospital.update(hospital.random_values(1), base_version=0)[1],
                headers=leaving.auth,
            )
            assert ok.status_code == 202, ok.text
            revoked = httpx.delete(
                f"{keyauth}/v1/clients/{leaving.client_id}", headers={"X-Admin-Key": ADMIN_KEY}
            )
            assert revoked.status_code == 204
            deadline = time.monotonic() + 10
            while True:
                refused = http.post(job_url("", job, "/slots"), headers=leaving.auth)
                if refused.status_code != 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            still = http.post(job_url("", job, "/slots"), headers=hospitals[0].auth)
            paused = http.post(
                job_url("", job, "/pause"), headers={"Authorization": f"Bearer {admin}"}
            )

    assert refused.status_code == 403
    assert refused.json()["code"] == "client_revoked"
    assert still.status_code == 200
    assert paused.status_code == 200  # the administrator's token is not a client's


def test_startup_without_keyauth_fails_with_a_clear_message(tmp_path: Path) -> None:
    env = clean_env(
        FLSERVER_STATE_DIR=str(tmp_path / "state"),
        FLSERVER_KEYAUTH_URL=f"http://127.0.0.1:{free_port()}",
        FLSERVER_KEYAUTH_ATTEMPTS="2",
        FLSERVER_KEYAUTH_RETRY_DELAY="0.1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "fl_server.app:app", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "fl_server cannot start: keyauth at http://127.0.0.1:" in result.stderr
    assert "after 2 attempts" in result.stderr
    assert not (tmp_path / "state").exists()
