"""The REST surface through the ASGI app: the status codes, headers and problems of protocol.md."""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.errors import StartupError
from fl_server.material import KeyauthMaterial
from tests.fl_server.api import Api, assert_problem, open_api
from tests.fl_server.helpers import JOB, Hospital, mint_token, spec_body, wait_published

pytestmark = pytest.mark.anyio


@pytest.fixture
async def training(api: Api, hospital: Hospital) -> Api:
    await api.start_job(hospital, hospital.random_values(0, scale=0.1))
    return api


async def test_the_job_from_layout_to_training(
    api: Api, hospital: Hospital, keys: crypto.KeyMaterial
) -> None:
    job = (await api.http.get(api.at(), headers=api.auth())).json()
    created_at = job.pop("created_at")
    assert job == {
        "name": JOB,
        "description": f"the {JOB} study",
        "state": "waiting_for_initial_model",
        "stop_reason": None,
        "version": 0,
        "updates_applied": 0,
        "target_updates": 1000,
        "spec_sha256": hashlib.sha256(spec_body()).hexdigest(),
        "key_epoch": 1,
        "profile": "test-n2048",
        "layout_fingerprint": None,
        "training_seconds": 0.0,
        "key_id": hashlib.sha256(keys.secret_context).hexdigest(),
        "integrity": {"state": "healthy", "probe": None},
        "rotation": None,
    }
    assert created_at.endswith("Z")
    assert_problem(await api.http.get(api.at("/layout"), headers=api.auth()), 404, "no_layout")
    assert_problem(await api.model(), 409, "job_not_started")
    body = hospital.layout.to_json()

    first = await api.http.put(api.at("/layout"), content=body, headers=api.auth())
    again = await api.http.put(api.at("/layout"), content=body, headers=api.auth())
    other = crypto.build_layout({"w": np.zeros(10, np.float32)}, 2048).to_json()
    conflict = await api.http.put(api.at("/layout"), content=other, headers=api.auth())

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == {"fingerprint": hospital.layout.fingerprint.hex()}
    assert_problem(conflict, 409, "layout_mismatch")
    assert (await api.http.get(api.at("/layout"), headers=api.auth())).content == body
    model = hospital.initial_model(hospital.random_values(0))
    created = await api.http.put(api.at("/initial-model"), content=model, headers=api.auth())
    assert created.status_code == 201
    assert created.json() == {"version": 0, "state": "training"}
    exists = await api.http.put(api.at("/initial-model"), content=model, headers=api.auth())
    assert_problem(exists, 409, "initial_model_exists")
    job = (await api.http.get(api.at(), headers=api.auth())).json()
    assert job["state"] == "training"
    assert job["layout_fingerprint"] == hospital.layout.fingerprint.hex()


async def test_layouts_of_another_block_size_too_large_or_malformed_are_refused(
    api: Api,
) -> None:
    huge = crypto.build_layout({"w": np.zeros(10, np.float32)}, 2048).to_dict()
    huge["tensors"][0]["shape"] = [10**9]
    assert_problem(
        await api.http.put(
            api.at("/layout"), content=json.dumps(huge).encode(), headers=api.auth()
        ),
        422,
        "layout_invalid",
    )
    wrong_size = crypto.build_layout({"w": np.zeros(10, np.float32)}, 4096).to_json()
    assert_problem(
        await api.http.put(api.at("/layout"), content=wrong_size, headers=api.auth()),
        422,
        "layout_invalid",
    )
    assert_problem(
        await api.http.put(api.at("/layout"), content=b"{not json", headers=api.auth()),
        422,
        "layout_invalid",
    )


async def test_model_download_with_etag_and_changed_blocks(
    training: Api, hospital: Hospital
) -> None:
    api = training
    full = await api.model()
    assert full.status_code == 200
    assert full.headers["content-type"] == "application/octet-stream"
    assert full.headers["X-Hefl-Model-Version"] == "0"
    etag = full.headers["ETag"]
    unchanged = await api.model(headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""

    values = hospital.random_values(5)
    pushed = await api.push(hospital.update(values, base_version=0, indices=[2])[1])
    assert pushed.status_code == 202
    await api.status()  # the app answers while the worker publishes
    wait_published(api.service)

    changed = await api.model(headers={"If-None-Match": etag})
    delta = await api.model(params={"since": 0})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.headers["X-Hefl-Model-Version"] == "1"
    version, blocks = hospital.decrypt_blocks(delta.content)
    assert (version, sorted(blocks)) == (1, [2])
    none_changed = await api.model(params={"since": 1})
    assert hospital.decrypt_blocks(none_changed.content) == (1, {})
    ahead = await api.model(params={"since": 2})
    assert assert_problem(ahead, 409, "version_ahead")["current_version"] == 1
    assert_problem(await api.model(params={"since": -1}), 422, "request_invalid")


async def test_an_update_is_acknowledged_then_retried_as_a_duplicate(
    training: Api, hospital: Hospital
) -> None:
    api = training
    uid, envelope = hospital.update(hospital.random_values(1), base_version=0)

    first = await api.push(envelope)
    again = await api.push(envelope)

    assert first.status_code == again.status_code == 202
    assert first.json() == {
        "update_id": str(uid),
        "version": 1,
        "staleness": 0,
        "weight": 1.0,
        "duplicate": False,
    }
    assert again.json() == {**first.json(), "duplicate": True}
    status = await api.status()
    assert status["updates_applied"] == 1
    assert status["duplicates"] == 1
    assert status["bytes_in"] >= 2 * len(envelope)


async def test_tokens_missing_forged_expired_or_revoked_are_refused(
    training: Api, hospital: Hospital, signing_key: Ed25519PrivateKey
) -> None:
    api = training
    envelope = hospital.update(hospital.random_values(1), base_version=0)[1]
    forger = Ed25519PrivateKey.generate()
    cases = {
        "token_missing": (None, 401),
        "token_invalid": (mint_token(forger), 401),
        "token_expired": (mint_token(signing_key, lifetime=-60), 401),
        "token_wrong_role": (mint_token(signing_key, role="admin"), 403),
        "client_revoked": (mint_token(signing_key, "client-gone"), 403),
    }
    api.app.state.service.set_revoked({"client-gone"})
    for code, (token, status) in cases.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await api.http.post(api.at("/updates"), content=envelope, headers=headers)
        assert_problem(response, status, code)
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    garbage = await api.http.post(
        api.at("/updates"), content=envelope, headers={"Authorization": "Bearer not.a.jwt"}
    )
    assert_problem(garbage, 401, "token_invalid")
    assert (await api.http.get(api.at(), headers=api.auth())).json()["version"] == 0


def _raw_update(fingerprint: bytes, blocks: list[tuple[int, bytes]], base: int = 0) -> bytes:
    """An update envelope written by hand, to say what ``update_to_bytes`` would refuse to."""
    head = struct.pack("<4sBBH32s", b"HEFL", 1, 2, 0, fingerprint)
    head += struct.pack("<QI16sI", base, 1, uuid.uuid4().bytes, len(blocks))
    return head + b"".join(struct.pack("<II", i, len(d)) + d for i, d in blocks)


async def test_every_bad_envelope_gets_a_precise_problem_and_changes_nothing(
    training: Api, hospital: Hospital, layout: crypto.ModelLayout
) -> None:
    # Prepare
    api = training
    before = await api.model()
    values = hospital.random_values(1)
    good = hospital.update(values, base_version=0)[1]
    block = hospital.cipher.encrypt_update_block(values[0])
    other = crypto.generate_key_material(crypto.DEFAULT_PROFILE)
    foreign = crypto.ClientCipher(other.secret_context, crypto.DEFAULT_PROFILE)
    fp = layout.fingerprint
    cases: dict[str, tuple[bytes, int, str]] = {
        "garbage": (b"definitely not an envelope" * 10, 400, "envelope_malformed"),
        "empty": (b"", 400, "envelope_truncated"),
        "truncated": (good[: len(good) // 2], 400, "envelope_truncated"),
        "trailing bytes": (good + b"\x00", 400, "envelope_malformed"),
        "a model envelope": (hospital.initial_model(values), 400, "envelope_malformed"),
        "wrong layout": (_raw_update(b"\x07" * 32, [(0, block)]), 409, "layout_mismatch"),
        "wrong key epoch": (
            hospital.update(values, base_version=0, key_epoch=7)[1],
            409,
            "key_epoch_mismatch",
        ),
        "block index out of range": (_raw_update(fp, [(3, block)]), 422, "block_index_invalid"),
        "duplicated block index": (
            _raw_update(fp, [(0, block), (0, block)]),
            422,
            "block_index_invalid",
        ),
        "no blocks": (_raw_update(fp, []), 422, "block_index_invalid"),
        "oversized block": (_raw_update(fp, [(0, block * 4)]), 413, "envelope_too_large"),
        "wrongly scaled": (
            _raw_update(fp, [(0, hospital.cipher.encrypt_model_block(values[0]))]),
            422,
            "ciphertext_invalid",
        ),
        "wrong context": (
            _raw_update(fp, [(0, foreign.encrypt_update_block(values[0][:100]))]),
            422,
            "ciphertext_invalid",
        ),
        "ciphertext garbage": (
            _raw_update(fp, [(0, b"\x5e\xa1" * 300)]),
            422,
            "ciphertext_invalid",
        ),
        "base version from the future": (
            hospital.update(values, base_version=9)[1],
            409,
            "version_ahead",
        ),
    }

    # Execute + Assert
    for what, (data, status, code) in cases.items():
        problem = assert_problem(await api.push(data), status, code)
        assert problem.get("current_version", 0) == 0, what
    after = await api.model()
    assert after.content == before.content
    assert after.headers["X-Hefl-Model-Version"] == "0"
    report = await api.status()
    assert report["updates_applied"] == 0
    assert sum(report["updates_rejected"].values()) == len(cases)
    assert report["updates_rejected"]["ciphertext_invalid"] == 3
    assert report["clients"]["client-a"]["updates_rejected"] == len(cases)
    assert (await api.push(good)).status_code == 202


async def test_bodies_beyond_the_limit_are_refused_before_being_read(
    training: Api, hospital: Hospital
) -> None:
    api = training
    limit = api.service.envelope_limit()
    declared = await api.http.post(
        api.at("/updates"),
        content=b"x" * 10,
        headers={**api.auth(), "Content-Length": str(limit + 1)},
    )
    assert_problem(declared, 413, "body_too_large")
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 4 * limit:
            sent += 65536
            yield b"\x00" * 65536

    # an update body is parsed as it streams in: what is not an envelope is refused at once
    streamed = await api.http.post(api.at("/updates"), content=endless(), headers=api.auth())
    assert_problem(streamed, 400, "envelope_malformed")
    assert sent <= 2 * 65536  # reading stopped at the first bytes, long before the limit
    assert api.service.status().queued_updates == 0


async def test_too_stale_is_409_with_the_current_version(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    async for api in open_api(tmp_path, material, signing_key, max_staleness=1):
        await api.start_job(hospital, hospital.random_values(0))
        for base in (0, 1):
            assert (
                await api.push(hospital.update(hospital.random_values(base), base_version=base)[1])
            ).status_code == 202
        stale = await api.push(hospital.update(hospital.random_values(9), base_version=0)[1])
        assert assert_problem(stale, 409, "too_stale")["current_version"] == 2


async def test_slots_and_rate_limits_answer_429_with_retry_after(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, hospital: Hospital
) -> None:
    async for api in open_api(
        tmp_path,
        material,
        signing_key,
        max_training=1,
        slot_ttl=120,
        client_updates_per_minute=1,
        client_update_burst=1,
    ):
        slots = api.at("/slots")
        assert_problem(await api.http.post(slots, headers=api.auth()), 409, "job_not_started")
        await api.start_job(hospital, hospital.random_values(0))
        other = mint_token(signing_key, "client-b")

        lease = await api.http.post(slots, headers=api.auth())
        renewed = await api.http.post(slots, headers=api.auth())
        full = await api.http.post(slots, headers=api.auth(other))

        assert lease.status_code == renewed.status_code == 200
        assert renewed.json()["expires_at"] >= lease.json()["expires_at"]
        assert_problem(full, 429, "slots_full")
        assert 1 <= int(full.headers["Retry-After"]) <= 120
        # An applied update gives the slot back.
        assert (
            await api.push(hospital.update(hospital.random_values(1), base_version=0)[1])
        ).status_code == 202
        assert (await api.http.post(slots, headers=api.auth(other))).status_code == 200
        assert (await api.http.delete(slots, headers=api.auth(other))).status_code == 204

        limited = await api.push(hospital.update(hospital.random_values(2), base_version=1)[1])
        assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 59
        assert (await api.http.get(api.at(), headers=api.auth())).json()["version"] == 1


async def test_metrics_reports_show_in_status(
    training: Api, signing_key: Ed25519PrivateKey
) -> None:
    api = training
    metrics = api.at("/metrics")
    report = {"version": 0, "metrics": {"loss": 0.7, "accuracy": 0.6, "n_samples": 50}}
    accepted = await api.http.post(metrics, json=report, headers=api.auth())
    assert accepted.status_code == 202
    assert accepted.json() == {"version": 0}
    bad = {
        "not json": b"{",
        "no metrics": b'{"version": 0, "metrics": {}}',
        "a string value": b'{"version": 0, "metrics": {"loss": "low"}}',
        "a bad name": b'{"version": 0, "metrics": {"lo ss": 1}}',
        "negative samples": b'{"version": 0, "metrics": {"n_samples": -1}}',
        "negative version": b'{"version": -1, "metrics": {"loss": 1}}',
        "a name with a newline": b'{"version": 0, "metrics": {"loss\\n": 1}}',
        "a huge integer": b'{"version": 0, "metrics": {"loss": 1' + b"0" * 400 + b"}}",
        "beyond the bound": b'{"version": 0, "metrics": {"loss": 1e13}}',
    }
    for what, body in bad.items():
        response = await api.http.post(metrics, content=body, headers=api.auth())
        assert_problem(response, 422, "metrics_invalid"), what
    ahead = await api.http.post(
        metrics, json={"version": 3, "metrics": {"loss": 1}}, headers=api.auth()
    )
    assert_problem(ahead, 409, "version_ahead")
    huge = await api.http.post(metrics, content=b" " * 100_000, headers=api.auth())
    assert_problem(huge, 413, "body_too_large")

    status = await api.status()
    received_at = status["metrics"][0].pop("received_at")
    assert status["metrics"] == [
        {
            "version": 0,
            "reports": 1,
            "n_samples": 50,
            "mean": {"accuracy": 0.6, "loss": 0.7},
            "clients": {"client-a": {"accuracy": 0.6, "loss": 0.7}},
        }
    ]
    assert received_at is not None
    client = status["clients"]["client-a"]
    assert client["client_name"] == "hospital-client-a"
    assert client["metrics_reports"] == 1
    assert client["last_seen"] is not None
    assert client["latest_metrics"] == {
        "version": 0,
        "n_samples": 50,
        "values": {"accuracy": 0.6, "loss": 0.7},
    }
    assert status["pooled_metrics"] == {
        "accuracy": {"value": 0.6, "sites": 1, "n_samples": 50},
        "loss": {"value": 0.7, "sites": 1, "n_samples": 50},
    }


async def test_the_epsilon_a_hospital_spent_shows_in_status_and_prometheus(
    training: Api, signing_key: Ed25519PrivateKey
) -> None:
    # Prepare
    api = training
    metrics = api.at("/metrics")
    spent = {"epsilon": 1.25, "delta": 1e-5, "target_epsilon": 3}
    report = {"version": 0, "metrics": {"loss": 0.7, "n_samples": 50}, "privacy": spent}
    bad = {
        "negative": {"epsilon": -1, "delta": 1e-5},
        "no delta": {"epsilon": 1},
        "delta of 1": {"epsilon": 1, "delta": 1},
        "a string": {"epsilon": "1", "delta": 1e-5},
        "an unknown field": {"epsilon": 1, "delta": 1e-5, "sigma": 1.1},
        "beyond the bound": {"epsilon": 1e7, "delta": 1e-5},
    }

    # Execute
    accepted = await api.http.post(metrics, json=report, headers=api.auth())
    refused = {
        what: await api.http.post(metrics, json={**report, "privacy": privacy}, headers=api.auth())
        for what, privacy in bad.items()
    }
    nan = await api.http.post(
        metrics,
        content=b'{"version": 0, "metrics": {"loss": 1}, '
        b'"privacy": {"epsilon": NaN, "delta": 0.1}}',
        headers=api.auth(),
    )
    # a later report without the section (or with less spent) does not hide what was spent
    later = {"version": 0, "metrics": {"loss": 0.6, "n_samples": 50}}
    await api.http.post(metrics, json=later, headers=api.auth())
    status = await api.status()
    text = (await api.http.get("/metrics")).text

    # Assert
    assert accepted.status_code == 202
    for what, response in refused.items():
        assert_problem(response, 422, "metrics_invalid"), what
    assert_problem(nan, 422, "metrics_invalid")
    assert status["clients"]["client-a"]["privacy"] == {
        "epsilon": 1.25,
        "delta": 1e-5,
        "target_epsilon": 3.0,
        "version": 0,
        "level": "sample",
        "updates": None,
    }
    assert 'hefl_server_privacy_epsilon_max{job="study"} 1.25' in text
    assert 'hefl_server_privacy_clients{job="study"} 1.0' in text


async def test_prometheus_metrics_come_from_this_app_only(
    training: Api,
    hospital: Hospital,
    tmp_path: Path,
    material: KeyauthMaterial,
    signing_key: Ed25519PrivateKey,
) -> None:
    api = training
    await api.push(hospital.update(hospital.random_values(1), base_version=0)[1])
    await api.push(b"junk" * 20)
    response = await api.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'hefl_server_model_version{job="study"} 1.0' in text
    assert 'hefl_server_updates_applied_total{job="study"} 1.0' in text
    assert 'hefl_server_receipts_kept{job="study"} 1.0' in text
    assert 'hefl_server_updates_rejected_total{code="envelope_malformed",job="study"} 1.0' in text
    assert 'hefl_server_update_staleness_bucket{job="study",le="0"} 1.0' in text
    assert 'hefl_server_job_state{job="study",state="training"} 1.0' in text
    assert "hefl_server_jobs_failed 0.0" in text
    # A second app in the same process has its own registry (no duplicate-metric errors).
    async for second in open_api(tmp_path / "second", material, signing_key):
        second_text = (await second.http.get("/metrics")).text
        assert 'hefl_server_model_version{job="study"} 0.0' in second_text


async def test_openapi_lists_exactly_the_contract(api: Api) -> None:
    paths = (await api.http.get("/openapi.json")).json()["paths"]
    job = "/v1/jobs/{job}"
    assert {(p, m) for p, ops in paths.items() for m in ops} == {
        ("/healthz", "get"),
        ("/v1/jobs", "get"),
        ("/v1/jobs", "post"),
        (job, "get"),
        (f"{job}/spec", "get"),
        (f"{job}/pause", "post"),
        (f"{job}/resume", "post"),
        (f"{job}/stop", "post"),
        (f"{job}/rotation", "post"),
        (f"{job}/rotation", "put"),
        (f"{job}/layout", "get"),
        (f"{job}/layout", "put"),
        (f"{job}/initial-model", "put"),
        (f"{job}/model", "get"),
        (f"{job}/slots", "post"),
        (f"{job}/slots", "delete"),
        (f"{job}/leases", "post"),
        (f"{job}/updates", "post"),
        (f"{job}/metrics", "post"),
        (f"{job}/integrity", "post"),
        (f"{job}/repairs", "post"),
        (f"{job}/quarantine/{{client_id}}", "delete"),
        (f"{job}/status", "get"),
        ("/v1/status", "get"),
    }
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    assert_problem(await api.http.get("/v1/nothing"), 404, "not_found")
    assert_problem(await api.http.delete(api.at("/model")), 405, "method_not_allowed")


def test_importing_the_app_module_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fl_server.app as module

    state_dir = tmp_path / "never-created"
    monkeypatch.setenv("FLSERVER_STATE_DIR", str(state_dir))
    monkeypatch.setenv("FLSERVER_KEYAUTH_URL", "http://127.0.0.1:9")
    monkeypatch.delitem(module.__dict__, "app", raising=False)
    app = module.app  # what `uvicorn fl_server.app:app` looks up
    assert app.state.settings.state_dir == state_dir
    assert not state_dir.exists()
    monkeypatch.setenv("FLSERVER_MAX_QUEUED_UPDATES", "0")
    with pytest.raises(Exception, match="FLSERVER_"):
        module.create_app()


def test_a_job_setting_in_the_environment_is_refused_with_where_it_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fl_server.app as module

    monkeypatch.setenv("FLSERVER_TARGET_UPDATES", "500")
    monkeypatch.setenv("FLSERVER_BUFFER_SIZE", "2")

    with pytest.raises(StartupError) as info:
        module.create_app()

    detail = info.value.detail
    assert "FLSERVER_BUFFER_SIZE, FLSERVER_TARGET_UPDATES" in detail
    assert "[server] and [stop]" in detail
