"""Each job bound to its key id: recorded at creation, checked at every open, and refused
with what happened and what to do when keyauth's keys behind its epoch were replaced."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.errors import StartupError, StateError
from fl_server.keyauth_client import KeyauthMaterialSource
from fl_server.store import JobRecord
from keyauth.tokens import TokenSigner
from tests.fl_server.helpers import mint_token, spec_body
from tests.fl_server.test_server_keyauth import FakeKeyauth, client_for, serving

pytestmark = pytest.mark.anyio

REPLACED = "c3" * 32  # keyauth's key id of epoch 3 once its keys were generated again


@pytest.fixture
def fake(keys: crypto.KeyMaterial, signing_key: Ed25519PrivateKey) -> FakeKeyauth:
    return FakeKeyauth(keys, signing_key)


def job_file(tmp_path: Path, name: str) -> Path:
    return tmp_path / "state" / "jobs" / name / "job.json"


def stored(tmp_path: Path, name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(job_file(tmp_path, name).read_text())
    return raw


def assert_replaced_message(detail: str, name: str, created_under: str) -> None:
    """What happened, with both ids, and what the operator can do."""
    assert detail.startswith(f"job {name} is not opened: ")
    assert (
        f"keyauth's keys for key epoch 3 were replaced: key id {REPLACED}, "
        f"this job was created under {created_under}."
    ) in detail
    assert "restore keyauth's state directory from its backup" in detail
    assert "create a new job under another name" in detail


# Fetching: each epoch's context with its verified key id


async def test_each_epochs_context_comes_with_its_verified_key_id(
    fake: FakeKeyauth, tmp_path: Path
) -> None:
    source = KeyauthMaterialSource(client_for(fake, tmp_path))

    pinned = await source.epoch_context(1)
    current = await source.current_context()
    await source.aclose()

    assert (pinned.key_id, current.key_id) == (fake.key_id_for(1), fake.key_id_for(3))
    assert fake.fetches("/v1/keys/key-id") == [
        "http://127.0.0.1:8700/v1/keys/key-id?epoch=1",
        "http://127.0.0.1:8700/v1/keys/key-id?epoch=3",
    ]


async def test_a_statement_the_token_key_does_not_verify_is_refused_at_once(
    fake: FakeKeyauth, tmp_path: Path
) -> None:
    fake.signer = TokenSigner(Ed25519PrivateKey.generate())
    source = KeyauthMaterialSource(client_for(fake, tmp_path, keyauth_attempts=5))

    with pytest.raises(StartupError, match=r"key epoch 1's key id is refused") as refused:
        await source.epoch_context(1)
    await source.aclose()

    assert "Signature verification failed" in refused.value.detail
    assert "restart fl_server" in refused.value.detail
    assert len(fake.fetches("/v1/keys/key-id")) == 1


# Creating: the job records its key id


async def test_a_job_records_the_key_id_of_its_epoch_and_shows_it(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async for http, admin in serving(fake, tmp_path, signing_key):
        created = (await http.post("/v1/jobs", content=spec_body("first"), headers=admin)).json()
        status = (await http.get("/v1/jobs/first/status", headers=admin)).json()

    assert created["key_id"] == status["key_id"] == fake.key_id_for(3)
    assert (stored(tmp_path, "first")["format"], stored(tmp_path, "first")["key_id"]) == (
        4,
        fake.key_id_for(3),
    )


# Reopening: the (c) scenario, in process


async def test_a_job_whose_keys_keyauth_replaced_is_refused_with_what_to_do(
    fake: FakeKeyauth, keys: crypto.KeyMaterial, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    # Prepare: a job on epoch 3; then keyauth loses its state and starts afresh: new keys
    # under the same epoch numbers, and a new token key.
    async for http, admin in serving(fake, tmp_path, signing_key):
        await http.post("/v1/jobs", content=spec_body("old"), headers=admin)
    created_under = fake.key_id_for(3)
    new_key = Ed25519PrivateKey.generate()
    fresh = FakeKeyauth(keys, new_key)
    fresh.key_ids = {3: REPLACED, 1: "c1" * 32}

    # Execute: the server restarts against the fresh keyauth.
    async for http, admin in serving(fresh, tmp_path, new_key):
        status = (await http.get("/v1/status", headers=admin)).json()
        shown = await http.get("/v1/jobs/old", headers=admin)
        client = {"Authorization": f"Bearer {mint_token(new_key, 'client-a', epoch=3)}"}
        model = await http.get("/v1/jobs/old/model", headers=client)
        again = await http.post("/v1/jobs", content=spec_body("old"), headers=admin)
        new = await http.post("/v1/jobs", content=spec_body("new"), headers=admin)
        jobs = (await http.get("/v1/jobs", headers=admin)).json()

    # Assert: refused, and said so in status and in each answer; a new job is created.
    assert status["jobs"] == []
    (failed,) = status["failed_jobs"]
    assert failed["name"] == "old"
    assert_replaced_message(failed["error"], "old", created_under)
    for answer in (shown, model, again):
        assert (answer.status_code, answer.json()["code"]) == (500, "state_invalid")
        assert answer.json()["detail"] == failed["error"]
    assert new.status_code == 201
    assert new.json()["key_id"] == REPLACED
    assert [job["name"] for job in jobs] == ["new"]
    assert stored(tmp_path, "old")["key_id"] == created_under


async def test_the_refusal_is_logged(
    fake: FakeKeyauth,
    tmp_path: Path,
    signing_key: Ed25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async for http, admin in serving(fake, tmp_path, signing_key):
        await http.post("/v1/jobs", content=spec_body("old"), headers=admin)
    created_under = fake.key_id_for(3)
    fake.key_ids[3] = REPLACED

    with caplog.at_level(logging.ERROR, logger="fl_server"):
        async for _http, _admin in serving(fake, tmp_path, signing_key):
            pass

    (logged,) = [r.getMessage() for r in caplog.records if "were replaced" in r.getMessage()]
    assert_replaced_message(logged, "old", created_under)


async def test_jobs_of_other_epochs_and_unchanged_keys_open_as_before(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async for http, admin in serving(fake, tmp_path, signing_key):
        await http.post("/v1/jobs", content=spec_body("on-three"), headers=admin)
        fake.epochs.add(4)
        fake.current = 4
        await http.post("/v1/jobs", content=spec_body("on-four"), headers=admin)
    fake.key_ids[3] = REPLACED

    async for http, admin in serving(fake, tmp_path, signing_key):
        status = (await http.get("/v1/status", headers=admin)).json()

    assert [job["name"] for job in status["jobs"]] == ["on-four"]
    assert [job["name"] for job in status["failed_jobs"]] == ["on-three"]


# A running server that meets keyauth's replaced keys


async def test_a_running_server_takes_out_the_jobs_whose_keys_it_meets_replaced(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    # keyauth's keys were generated again, its token key restored (the signature holds):
    # the server learns of it when it asks for the current epoch's key id.
    async for http, admin in serving(fake, tmp_path, signing_key):
        await http.post("/v1/jobs", content=spec_body("old"), headers=admin)
        created_under = fake.key_id_for(3)
        fake.key_ids[3] = REPLACED
        new = await http.post("/v1/jobs", content=spec_body("new"), headers=admin)
        old = await http.get("/v1/jobs/old", headers=admin)
        status = (await http.get("/v1/status", headers=admin)).json()

    assert (new.status_code, new.json()["key_id"]) == (201, REPLACED)
    assert (old.status_code, old.json()["code"]) == (500, "state_invalid")
    assert_replaced_message(old.json()["detail"], "old", created_under)
    assert [job["name"] for job in status["jobs"]] == ["new"]
    assert [job["name"] for job in status["failed_jobs"]] == ["old"]


async def test_a_running_server_whose_keyauth_changed_its_token_key_creates_nothing(
    fake: FakeKeyauth, tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    async for http, admin in serving(fake, tmp_path, signing_key):
        await http.post("/v1/jobs", content=spec_body("old"), headers=admin)
        fake.signer = TokenSigner(Ed25519PrivateKey.generate())
        fake.key_ids[3] = REPLACED
        refused = await http.post("/v1/jobs", content=spec_body("new"), headers=admin)
        old = await http.get("/v1/jobs/old", headers=admin)

    assert refused.status_code == 500
    assert refused.json()["code"] == "startup_failed"
    assert "restart fl_server" in refused.json()["detail"]
    assert old.status_code == 200
    assert not job_file(tmp_path, "new").exists()


# Jobs from before key ids: trust on first use


async def test_a_job_from_before_key_ids_records_its_key_id_on_first_open(
    fake: FakeKeyauth,
    tmp_path: Path,
    signing_key: Ed25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: the job.json of an fl_server from before key ids (format 2, no key_id).
    async for http, admin in serving(fake, tmp_path, signing_key):
        await http.post("/v1/jobs", content=spec_body("old"), headers=admin)
    raw = stored(tmp_path, "old")
    del raw["key_id"]
    job_file(tmp_path, "old").write_text(json.dumps({**raw, "format": 2}))

    # Execute: its first open records keyauth's key id; a later change is refused.
    with caplog.at_level(logging.WARNING, logger="fl_server"):
        async for http, admin in serving(fake, tmp_path, signing_key):
            shown = (await http.get("/v1/jobs/old", headers=admin)).json()
    recorded = stored(tmp_path, "old")
    created_under = fake.key_id_for(3)
    fake.key_ids[3] = REPLACED
    async for http, admin in serving(fake, tmp_path, signing_key):
        refused = await http.get("/v1/jobs/old", headers=admin)

    # Assert
    assert shown["key_id"] == created_under
    assert (recorded["format"], recorded["key_id"]) == (4, shown["key_id"])
    assert any("trusted on first use" in r.getMessage() for r in caplog.records)
    assert refused.status_code == 500
    assert_replaced_message(refused.json()["detail"], "old", shown["key_id"])


def test_the_job_record_reads_formats_2_and_3_and_writes_format_4() -> None:
    record = JobRecord(
        job_id="j", name="n", spec_json="{}", spec_sha256=hashlib.sha256(b"{}").hexdigest(),
        key_epoch=1, profile="p", created_at=1.0, key_id="ab" * 32,
    )  # fmt: skip
    written = json.loads(record.to_json())
    old = {k: v for k, v in written.items() if k not in ("key_id", "rotations")} | {"format": 2}
    three = {k: v for k, v in written.items() if k != "rotations"} | {"format": 3}

    assert written["format"] == 4
    assert JobRecord.from_json(record.to_json()) == record
    assert JobRecord.from_json(json.dumps(old).encode()).key_id is None
    assert JobRecord.from_json(json.dumps(three).encode()) == record


@pytest.mark.parametrize(
    "changes",
    [{"key_id": "AB" * 32}, {"key_id": "ab"}, {"key_id": 7}, {"format": 5}, {"format": "3"}],
)
def test_a_job_record_with_a_bad_key_id_or_format_is_refused(changes: dict[str, Any]) -> None:
    raw = {
        "format": 3, "job_id": "j", "name": "n", "spec": "{}",
        "spec_sha256": hashlib.sha256(b"{}").hexdigest(), "key_epoch": 1, "profile": "p",
        "created_at": 1.0, "key_id": "ab" * 32,
    }  # fmt: skip
    with pytest.raises(StateError, match=r"job\.json is unreadable"):
        JobRecord.from_json(json.dumps({**raw, **changes}).encode())
