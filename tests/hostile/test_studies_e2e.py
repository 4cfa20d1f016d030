"""Two studies at once on one server, through a kill -9 of it (issue 12's end-to-end test).

Everything runs as a consortium runs it, under real uvicorn and with the real command
lines: the administrator creates two jobs from TOML specs (``hefl-admin job create``),
three hospitals enroll (``hefl-client enroll``) and each trains on its own CSV table
(``hefl-client train --job ... --data FILE.csv``):

* ``heart-disease``: the example study (``deploy/studies/heart-disease.toml``, its stop
  rule made test-sized), a logistic model on UCI Heart Disease; hospital-a holds
  Cleveland's rows, hospital-b Hungary's (the CSVs ``deploy.heart_disease_csv`` writes).
  It stops at ``target_updates``.
* ``breast-cancer``: a small MLP on sklearn's Wisconsin breast cancer table, split
  between hospital-a and hospital-c by a Dirichlet draw. It stops at
  ``max_wall_seconds`` of training.

hospital-a (one state directory, one credential) trains in both jobs at once. While both
jobs train, fl_server is killed (SIGKILL) and restarted on the same port and state
directory; every client rides it out by itself.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_breast_cancer

from deploy.heart_disease_csv import write_hospital_csvs
from fl_client.data import dirichlet_split
from harness.admin import read_status, run_admin
from harness.enrollment import client_command, enroll_hospital
from harness.services import (
    ServiceError,
    ServiceProcess,
    keyauth_service,
    new_admin_key,
    server_service,
)

pytestmark = pytest.mark.e2e

EXAMPLE_SPEC = Path(__file__).parents[2] / "deploy" / "studies" / "heart-disease.toml"
HEART, CANCER = "heart-disease", "breast-cancer"
JOBS = (HEART, CANCER)
HEART_UPDATES = 60
# Enough training time for KILL_AFTER updates of the MLP, then KILL_AFTER of the logistic
# study started after them, on a loaded 2-core machine: the full suite beside other work
# once spent all of 15 s in the hospitals' first round.
CANCER_SECONDS = 60
# Whose rows each hospital holds, per job: hospital-a is in both.
HEART_ROWS = {"hospital-a": "cleveland", "hospital-b": "hungary"}
CANCER_SITES = {"hospital-a": 0, "hospital-c": 1}
HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
KILL_AFTER = 2  # kill -9 once each job has applied this many updates


# -- the hospitals' tables ---------------------------------------------------------------


def write_csv(path: Path, header: Sequence[str], rows: list[list[Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cancer_columns() -> list[str]:
    return [str(name).replace(" ", "_") for name in load_breast_cancer().feature_names]


def cancer_tables(directory: Path) -> dict[str, Path]:
    """sklearn's breast cancer table split between the hospitals (Dirichlet label skew),
    the label ``diagnosis`` written as words."""
    bunch = load_breast_cancer()
    parts = dirichlet_split(bunch.target, len(CANCER_SITES), alpha=2.0, seed=0, min_size=100)
    tables = {}
    for hospital, site in CANCER_SITES.items():
        rows = [
            [*(float(v) for v in bunch.data[i]), str(bunch.target_names[bunch.target[i]])]
            for i in parts[site]
        ]
        path = directory / f"{hospital}-{CANCER}.csv"
        tables[hospital] = write_csv(path, [*cancer_columns(), "diagnosis"], rows)
    return tables


# -- the studies -------------------------------------------------------------------------


def heart_spec(path: Path) -> Path:
    """The example study as it is written, but for a test-sized stop rule."""
    head, found, _ = EXAMPLE_SPEC.read_text(encoding="utf-8").partition("\n[stop]\n")
    assert found, f"{EXAMPLE_SPEC} has no [stop] section"
    path.write_text(f"{head}\n[stop]\ntarget_updates = {HEART_UPDATES}\n", encoding="utf-8")
    return path


def cancer_spec(path: Path) -> Path:
    features = "".join(
        f'[[data.features]]\nname = "{c}"\ntype = "numeric"\n' for c in cancer_columns()
    )
    path.write_text(
        f"""\
name = "{CANCER}"
description = "Wisconsin breast cancer: is the tumour malignant?"
profile = "n4096-s40"

[model]
name = "mlp"
args = {{ hidden = 16 }}
seed = 1

[data]
label = "diagnosis"
task = "binary"
classes = ["benign", "malignant"]
test_fraction = 0.3

{features}
[training]
optimizer = "adam"
lr = 0.01
batch_size = 32

[stop]
max_wall_seconds = {CANCER_SECONDS}
""",
        encoding="utf-8",
    )
    return path


# -- the people --------------------------------------------------------------------------


@dataclass
class Training:
    """One ``hefl-client train --json`` process: a hospital in one job."""

    hospital: str
    job: str
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = self.out.read_text(encoding="utf-8").splitlines()
        return [event for event in map(json.loads, lines) if event["event"] == kind]

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")


def train(work: Path, server: ServiceProcess, hospital: str, job: str, table: Path) -> Training:
    out, err = work / f"{hospital}-{job}.jsonl", work / f"{hospital}-{job}.err"
    command = client_command(
        "train",
        *("--job", job, "--server", server.url, "--data", str(table)),
        *("--state-dir", str(work / hospital), "--threads", "1", "--json"),
    )
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    return Training(hospital, job, process, out, err)


def job_status(server: ServiceProcess, job: str, viewer: str) -> dict[str, Any]:
    """``GET /v1/jobs/{job}/status`` with a viewer token; empty while the server does not
    answer or is starting."""
    try:
        return read_status(server.url, viewer, job, timeout=5)
    except (httpx.TransportError, ServiceError):
        return {}


def wait_until_trained(
    server: ServiceProcess,
    viewer: str,
    runs: list[Training],
    jobs: Sequence[str],
    deadline: float,
) -> dict[str, dict[str, Any]]:
    """Each of ``jobs``' status once every one has applied ``KILL_AFTER`` updates."""
    while True:
        seen = {job: job_status(server, job, viewer) for job in jobs}
        if all(status.get("updates_applied", 0) >= KILL_AFTER for status in seen.values()):
            return seen
        failed = [(r.hospital, r.job, r.stderr()[-2000:]) for r in runs if r.process.poll()]
        assert not failed, failed
        assert time.monotonic() < deadline, f"training stalled before the kill: {seen}"
        time.sleep(0.2)


# -- the test ----------------------------------------------------------------------------


def test_two_studies_share_a_server_and_a_hospital_through_a_kill_9(tmp_path: Path) -> None:
    # Prepare: the tables and specs that the hospitals and the administrator hold
    heart_toml = heart_spec(tmp_path / "heart.toml")
    cancer_toml = cancer_spec(tmp_path / "cancer.toml")
    # Each hospital's rows of UCI Heart Disease, as deploy's command writes them.
    heart_csvs = write_hospital_csvs(tmp_path / HEART, tuple(HEART_ROWS.values()))
    tables = {
        HEART: {hospital: heart_csvs[rows] for hospital, rows in HEART_ROWS.items()},
        CANCER: cancer_tables(tmp_path),
    }
    key = new_admin_key()
    with (
        keyauth_service(tmp_path / "keyauth", key, tmp_path / "keyauth.log") as keyauth,
        server_service(
            keyauth.url,
            tmp_path / "server",
            tmp_path / "server.log",
            client_updates_per_minute="0",
            checkpoint_every="4",
        ) as server,
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        # The administrator creates both jobs while the hospitals enroll.
        steps: list[Future[object]] = [
            pool.submit(run_admin, keyauth.url, server.url, key, "job", "create", str(toml))
            for toml in (heart_toml, cancer_toml)
        ]
        steps += [
            pool.submit(enroll_hospital, keyauth.url, key, name, tmp_path / name)
            for name in HOSPITALS
        ]
        for step in steps:
            step.result()
        # What the operator hands whoever watches the study: a read-only viewer token.
        viewer = run_admin(keyauth.url, server.url, key, "token", "viewer").strip()

        def start(job: str) -> list[Training]:
            return [train(tmp_path, server, h, job, table) for h, table in tables[job].items()]

        runs = start(CANCER)
        try:
            # Execute: kill -9 while both jobs train; restart on the same port and state.
            # The MLP study starts first: its first updates are the slow ones, and the
            # logistic study, started with it, once reached its 60 updates (and stopped)
            # before the MLP's second one, so the kill found only one job training.
            deadline = time.monotonic() + 300
            wait_until_trained(server, viewer, runs, (CANCER,), deadline)
            runs += start(HEART)
            before = wait_until_trained(server, viewer, runs, JOBS, deadline)
            server.kill()
            server.start()
            codes = [r.process.wait(timeout=max(1.0, deadline - time.monotonic())) for r in runs]
        finally:
            for run in runs:
                if run.process.poll() is None:
                    run.process.kill()
                    run.process.wait()
        final = {job: job_status(server, job, viewer) for job in JOBS}
        listed = json.loads(run_admin(keyauth.url, server.url, key, "job", "list", "--json"))

    # Assert: every client finished by itself, each job at its own stop rule
    assert codes == [0] * len(runs), [(r.hospital, r.job, r.stderr()[-2000:]) for r in runs]
    assert all(status["state"] == "training" for status in before.values()), before
    assert sum(run.stderr().count("; retry ") for run in runs) > 0  # they met the dead server
    assert {job: (final[job]["state"], final[job]["stop_reason"]) for job in JOBS} == {
        HEART: ("done", "target_updates"),
        CANCER: ("done", "max_wall_seconds"),
    }
    assert {job["name"]: job["stop_reason"] for job in listed} == {
        HEART: "target_updates",
        CANCER: "max_wall_seconds",
    }
    for run in runs:
        (stopped,) = run.events("stopped")
        assert (stopped["reason"], stopped["job_stop_reason"]) == (
            "job_done",
            final[run.job]["stop_reason"],
        )
    # Exactly once, in its own job: each update id a client was told was applied is
    # counted once by that job and never by the other.
    acked: dict[str, dict[str, set[str]]] = {job: {} for job in JOBS}
    for run in runs:
        acked[run.job][run.hospital] = {event["update_id"] for event in run.events("update")}
    ids = {job: set().union(*acked[job].values()) for job in JOBS}
    assert not ids[HEART] & ids[CANCER]
    for job in JOBS:
        assert final[job]["updates_applied"] == len(ids[job])
        assert final[job]["updates_applied"] > before[job]["updates_applied"]
        clients = final[job]["clients"].values()
        by_name = {client["client_name"]: client["updates_applied"] for client in clients}
        assert by_name == {hospital: len(own) for hospital, own in acked[job].items()}
    assert final[HEART]["updates_applied"] == HEART_UPDATES
    # Useful models: the final model on each hospital's held-out rows, in each job.
    for run in runs:
        (stopped,) = run.events("stopped")
        assert stopped["final_version"] == final[run.job]["version"]
        floor = {HEART: 0.75, CANCER: 0.95}[run.job]
        assert stopped["final_metrics"]["auroc"] >= floor, (run.hospital, run.job, stopped)
