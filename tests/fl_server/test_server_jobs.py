"""Jobs through the ASGI app: created from specs, several at once, who may do what, restarts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import hefl_study
from fl_server.app import create_app
from fl_server.errors import StateError
from fl_server.material import KeyauthMaterial
from tests.fl_server.api import Api, assert_problem, open_api
from tests.fl_server.helpers import (
    JOB,
    Hospital,
    make_settings,
    spec_body,
    spec_mapping,
    wait_published,
)

pytestmark = pytest.mark.anyio


async def reopen(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, **kw: Any
) -> AsyncIterator[Api]:
    """The app again on the same state directory (its job ``JOB`` exists already)."""
    async for api in open_api(tmp_path, material, signing_key, create=False, **kw):
        yield api


async def test_a_job_is_created_once_from_its_spec(api: Api) -> None:
    # Prepare: the job JOB exists (open_api created it); the same spec written otherwise.
    canonical = spec_body()
    spaced = json.dumps(json.loads(canonical), indent=2).encode()
    other = spec_body(target_updates=5)

    # Execute
    again = await api.http.post("/v1/jobs", content=spaced, headers=api.as_admin())
    conflict = await api.http.post("/v1/jobs", content=other, headers=api.as_admin())
    listed = await api.http.get("/v1/jobs", headers=api.auth())
    spec = await api.http.get(api.at("/spec"), headers=api.auth())

    # Assert
    assert again.status_code == 200
    assert again.json()["spec_sha256"] == hashlib.sha256(canonical).hexdigest()
    assert assert_problem(conflict, 409, "job_exists")["detail"].startswith(f"job {JOB} exists")
    assert [job["name"] for job in listed.json()] == [JOB]
    assert listed.json()[0] == again.json()
    assert spec.content == canonical
    assert spec.headers["content-type"] == "application/json"
    assert spec.headers["X-Hefl-Spec-Sha256"] == hashlib.sha256(spec.content).hexdigest()
    assert hefl_study.spec_from_json(spec.text).stop.target_updates == 1000


async def test_a_spec_that_mixes_the_privacy_levels_is_422_at_privacy(api: Api) -> None:
    mixed = {"level": "hospital", "clip": 1.0, "noise_multiplier": 1.0, "rounds": 5}
    body = json.dumps({**spec_mapping("mixed"), "privacy": mixed}).encode()

    answer = await api.http.post("/v1/jobs", content=body, headers=api.as_admin())

    problem = assert_problem(answer, 422, "spec_invalid")
    assert [p["location"] for p in problem["problems"]] == ["privacy"]
    assert 'rounds: sample-level settings, not for level = "hospital"' in problem["detail"]


async def test_an_invalid_spec_is_422_with_every_problem_located_and_creates_nothing(
    api: Api, tmp_path: Path
) -> None:
    raw = spec_mapping("Bad Name", staleness="polynomial", staleness_b=3)
    raw["stop"] = {}
    cases = {
        "problems": json.dumps(raw).encode(),
        "not json": b"{not json",
        "not utf-8": b"\xff\xfe",
        "nested too deeply": b"[" * 100_000,
        "another profile": spec_body("elsewhere", profile="n4096-s40"),
    }

    answers = {
        what: await api.http.post("/v1/jobs", content=body, headers=api.as_admin())
        for what, body in cases.items()
    }

    problem = assert_problem(answers["problems"], 422, "spec_invalid")
    locations = [p["location"] for p in problem["problems"]]
    assert locations == ["name", "server.staleness_b", "stop"]
    assert problem["detail"].splitlines()[0].startswith("name: 'Bad Name' is not a job name")
    assert len(problem["detail"].splitlines()) == 3
    assert assert_problem(answers["not json"], 422, "spec_invalid")["problems"][0]["location"] == (
        "JSON"
    )
    assert_problem(answers["not utf-8"], 422, "spec_invalid")
    assert (
        "too deeply" in assert_problem(answers["nested too deeply"], 422, "spec_invalid")["detail"]
    )
    profile = assert_problem(answers["another profile"], 422, "spec_invalid")
    assert profile["problems"][0]["location"] == "profile"
    assert "key epoch 1 ('test-n2048')" in profile["detail"]
    assert [j["name"] for j in (await api.http.get("/v1/jobs", headers=api.auth())).json()] == [JOB]
    assert sorted(p.name for p in (tmp_path / "state" / "jobs").iterdir()) == [JOB]


async def test_two_jobs_in_one_process_each_with_its_own_model_log_and_status(
    api: Api, hospital: Hospital
) -> None:
    # Prepare: a second job beside JOB, each started from its own initial model.
    assert (await api.create_job("second", target_updates=50)).status_code == 201
    initial = {JOB: hospital.random_values(0, scale=0.5), "second": hospital.random_values(1)}
    for name, values in initial.items():
        await api.start_job(hospital, values, job=name)
    pushed: dict[str, list[np.ndarray[Any, Any]]] = {JOB: [], "second": []}

    # Execute: two updates to JOB, one to the second job, a report to JOB only.
    for name, seed in [(JOB, 10), (JOB, 11), ("second", 12)]:
        values = hospital.random_values(seed)
        base = len(pushed[name])
        answer = await api.push(hospital.update(values, base_version=base)[1], job=name)
        assert answer.status_code == 202, answer.text
        pushed[name].append(values)
    report = {"version": 2, "metrics": {"accuracy": 0.9, "n_samples": 10}}
    await api.http.post(api.at("/metrics"), json=report, headers=api.auth())

    # Assert: each job's model is its own initial model plus its own updates.
    for name in (JOB, "second"):
        api.job = name
        wait_published(api.service)
        version, model = hospital.decrypt_model((await api.model()).content)
        expected = initial[name] + sum(pushed[name], np.zeros(hospital.shape))
        assert version == len(pushed[name])
        assert np.max(np.abs(model - expected)) <= hospital.profile.error_bound(3)
    first, second = await api.status(JOB), await api.status("second")
    assert (first["updates_applied"], second["updates_applied"]) == (2, 1)
    assert (first["target_updates"], second["target_updates"]) == (1000, 50)
    assert first["pooled_metrics"]["accuracy"]["value"] == 0.9
    assert (second["pooled_metrics"], second["metrics"]) == ({}, [])
    jobs = (await api.http.get("/v1/status", headers=api.as_admin())).json()
    assert [(j["name"], j["version"]) for j in jobs["jobs"]] == [("second", 1), (JOB, 2)]
    assert jobs["failed_jobs"] == []
    text = (await api.http.get("/metrics")).text
    assert 'hefl_server_updates_applied_total{job="study"} 2.0' in text
    assert 'hefl_server_updates_applied_total{job="second"} 1.0' in text


async def test_every_job_restarts_where_it_was(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    # Prepare: two jobs, one paused, with updates; then a clean shutdown.
    served: dict[str, bytes] = {}
    async for api in open_api(tmp_path, material, signing_key):
        await api.create_job("second")
        for name in (JOB, "second"):
            await api.start_job(hospital, hospital.random_values(0), job=name)
        await api.push(hospital.update(hospital.random_values(1), base_version=0)[1])
        await api.http.post(api.at("/pause", "second"), headers=api.as_admin())
        for name in (JOB, "second"):
            api.job = name
            wait_published(api.service)
            served[name] = (await api.model()).content

    # Execute
    async for api in reopen(tmp_path, material, signing_key):
        jobs = {j["name"]: j for j in (await api.http.get("/v1/jobs", headers=api.auth())).json()}
        models = {}
        for name in (JOB, "second"):
            api.job = name
            models[name] = (await api.model()).content

    # Assert
    assert models == served
    assert (jobs[JOB]["state"], jobs[JOB]["version"]) == ("training", 1)
    assert (jobs["second"]["state"], jobs["second"]["version"]) == ("paused", 0)


async def test_admin_and_client_tokens_each_open_their_own_routes(
    api: Api, hospital: Hospital
) -> None:
    # Prepare: what each route takes (client, admin or either), and a body for it.
    layout = hospital.layout.to_json()
    model = hospital.initial_model(hospital.random_values(0))
    update = hospital.update(hospital.random_values(1), base_version=0)[1]
    metrics = json.dumps({"version": 0, "metrics": {"loss": 1.0}}).encode()
    routes: list[tuple[str, str, str, bytes | None]] = [
        ("either", "GET", "/v1/jobs", None),
        ("admin", "POST", "/v1/jobs", spec_body()),
        ("either", "GET", api.at(), None),
        ("either", "GET", api.at("/spec"), None),
        ("client", "PUT", api.at("/layout"), layout),
        ("client", "GET", api.at("/layout"), None),
        ("client", "PUT", api.at("/initial-model"), model),
        ("client", "GET", api.at("/model"), None),
        ("client", "POST", api.at("/slots"), None),
        ("client", "POST", api.at("/leases"), None),
        ("client", "DELETE", api.at("/slots"), None),
        ("client", "POST", api.at("/updates"), update),
        ("client", "POST", api.at("/metrics"), metrics),
        ("admin", "POST", api.at("/pause"), None),
        ("admin", "POST", api.at("/resume"), None),
        ("admin", "POST", api.at("/stop"), None),
    ]
    tokens = {"client": api.token, "admin": api.admin}

    # Execute + Assert: the wrong role is 403 token_wrong_role and changes nothing; no
    # token is 401; the right one is served.
    for takes, method, path, body in routes:
        for role, token in tokens.items():
            if takes not in ("either", role):
                answer = await api.http.request(method, path, content=body, headers=api.auth(token))
                assert_problem(answer, 403, "token_wrong_role")
        assert_problem(await api.http.request(method, path, content=body), 401, "token_missing")
        for role, token in tokens.items():
            if takes in ("either", role):
                answer = await api.http.request(method, path, content=body, headers=api.auth(token))
                assert answer.status_code < 300, (method, path, role, answer.text)
    status = await api.status()
    assert (status["state"], status["stop_reason"], status["version"]) == ("done", "stopped", 1)
    for public in ("/metrics", "/healthz", "/ui"):
        assert (await api.http.get(public)).status_code == 200, public
    for path in ("/v1/status", api.at("/status")):
        assert_problem(await api.http.get(path), 401, "token_missing")
        for token in (api.token, api.admin):
            assert (await api.http.get(path, headers=api.auth(token))).status_code == 200, path


async def test_pause_resume_and_stop_over_http(api: Api, hospital: Hospital) -> None:
    await api.start_job(hospital, hospital.random_values(0))
    _, envelope = hospital.update(hospital.random_values(1), base_version=0)

    paused = await api.http.post(api.at("/pause"), headers=api.as_admin())
    slot = await api.http.post(api.at("/slots"), headers=api.auth())
    refused = await api.push(envelope)
    model = await api.model()
    resumed = await api.http.post(api.at("/resume"), headers=api.as_admin())
    accepted = await api.push(envelope)
    stopped = await api.http.post(api.at("/stop"), headers=api.as_admin())
    resume_done = await api.http.post(api.at("/resume"), headers=api.as_admin())
    pause_done = await api.http.post(api.at("/pause"), headers=api.as_admin())

    assert (paused.status_code, paused.json()["state"]) == (200, "paused")
    assert "send it again" in assert_problem(slot, 409, "job_paused")["detail"]
    assert_problem(refused, 409, "job_paused")
    assert (model.status_code, model.headers["X-Hefl-Model-Version"]) == (200, "0")
    assert resumed.json()["state"] == "training"
    assert (accepted.status_code, accepted.json()["version"]) == (202, 1)
    assert (stopped.json()["state"], stopped.json()["stop_reason"]) == ("done", "stopped")
    assert_problem(resume_done, 409, "job_not_paused")
    assert_problem(pause_done, 409, "job_not_training")
    status = await api.status()
    assert status["updates_rejected"] == {"job_paused": 1}
    assert [r["rule"] for r in status["stop_rules"]] == ["target_updates"]


async def test_every_job_path_answers_job_not_found_for_an_unknown_job(api: Api) -> None:
    paths = [
        ("GET", ""),
        ("GET", "/spec"),
        ("POST", "/pause"),
        ("POST", "/resume"),
        ("POST", "/stop"),
        ("PUT", "/layout"),
        ("GET", "/layout"),
        ("PUT", "/initial-model"),
        ("GET", "/model"),
        ("POST", "/slots"),
        ("POST", "/leases"),
        ("DELETE", "/slots"),
        ("POST", "/updates"),
        ("POST", "/metrics"),
        ("POST", "/integrity"),
        ("POST", "/repairs"),
        ("DELETE", "/quarantine/client-b"),
        ("GET", "/status"),
    ]
    admin_paths = ("/pause", "/resume", "/stop", "/repairs", "/quarantine/client-b")
    for method, suffix in paths:
        token = api.admin if suffix in admin_paths else api.token
        answer = await api.http.request(
            method, api.at(suffix, "nobody"), content=b"{}", headers=api.auth(token)
        )
        assert_problem(answer, 404, "job_not_found")


async def test_a_damaged_job_directory_is_left_out_and_the_others_serve(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    # Prepare: two jobs; then JOB's checkpoint is damaged.
    async for api in open_api(tmp_path, material, signing_key):
        await api.create_job("healthy")
        for name in (JOB, "healthy"):
            await api.start_job(hospital, hospital.random_values(0), job=name)
        for base in (0, 1):
            await api.push(hospital.update(hospital.random_values(base), base_version=base)[1])
    checkpoint = tmp_path / "state" / "jobs" / JOB / "checkpoint.bin"
    data = bytearray(checkpoint.read_bytes())
    data[-3] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    # Also: a directory that is no job at all.
    (tmp_path / "state" / "jobs" / "stray").mkdir(mode=0o700)

    # Execute
    async for api in reopen(tmp_path, material, signing_key):
        status = (await api.http.get("/v1/status", headers=api.as_admin())).json()
        broken = await api.http.get(api.at(), headers=api.auth())
        api.job = "healthy"
        model = await api.model()
        metrics = (await api.http.get("/metrics")).text

    # Assert
    assert [j["name"] for j in status["jobs"]] == ["healthy"]
    assert [f["name"] for f in status["failed_jobs"]] == ["stray", JOB]
    assert "fails its SHA-256" in status["failed_jobs"][1]["error"]
    assert "has no job.json" in status["failed_jobs"][0]["error"]
    detail = assert_problem(broken, 500, "state_invalid")["detail"]
    assert detail.startswith(f"job {JOB} could not be opened")
    assert model.status_code == 200
    assert "hefl_server_jobs_failed 2.0" in metrics


async def test_a_creation_a_crash_interrupted_leaves_no_job(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey
) -> None:
    # Prepare: what a kill -9 before the rename leaves (the job directory written aside).
    async for _ in open_api(tmp_path, material, signing_key):
        pass
    jobs = tmp_path / "state" / "jobs"
    (jobs / JOB).rename(jobs / f".new-{JOB}-0badc0de")

    # Execute
    async for api in reopen(tmp_path, material, signing_key):
        listed = (await api.http.get("/v1/jobs", headers=api.auth())).json()
        created = await api.create_job()

    # Assert: no job, nothing left aside; creating it again works.
    assert listed == []
    assert created.status_code == 201
    assert sorted(p.name for p in jobs.iterdir()) == [JOB]


async def test_the_state_of_a_single_job_server_is_refused_with_what_to_do(
    tmp_path: Path, material: KeyauthMaterial
) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "job.json").write_text("{}")
    app = create_app(make_settings(tmp_path / "state"), keyauth_material=material)

    with pytest.raises(StateError, match="move it away and create the job again"):
        async with app.router.lifespan_context(app):
            pass


async def test_listing_needs_a_token(api: Api) -> None:
    answer = await api.http.get("/v1/jobs")
    assert_problem(answer, 401, "token_missing")
    assert isinstance((await api.http.get("/v1/jobs", headers=api.as_admin())).json(), list)
