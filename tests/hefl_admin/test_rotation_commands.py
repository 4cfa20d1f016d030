"""``hefl-admin job rotate`` and the key-rotation part of ``job show``."""

from __future__ import annotations

import json

import pytest

from tests.hefl_admin.fakes import ADMIN_KEY, FakeKeyauth, FakeServer, job_record
from tests.hefl_admin.test_job_commands import run

JOB = "icu-mortality"


@pytest.fixture
def keyauth() -> FakeKeyauth:
    return FakeKeyauth()


@pytest.fixture
def training(keyauth: FakeKeyauth) -> FakeServer:
    server = FakeServer(keyauth)
    server.jobs[JOB] = job_record(JOB, "a" * 64, state="training", version=6)
    return server


def test_rotate_makes_keyauths_next_epoch_then_rotates_the_job(
    keyauth: FakeKeyauth, training: FakeServer
) -> None:
    status, out, err = run(["job", "rotate", JOB], keyauth, training)

    assert (status, err) == (0, "")
    new_epoch = [r for r in keyauth.requests if r.url.path == "/v1/key-epochs"]
    assert len(new_epoch) == 1
    assert new_epoch[0].headers["X-Admin-Key"] == ADMIN_KEY
    assert (training.requests[-1].method, training.requests[-1].url.path) == (
        "POST",
        f"/v1/jobs/{JOB}/rotation",
    )
    assert out.splitlines() == [
        "keyauth: new key epoch 2 (profile n4096-s40)",
        f"{JOB}: moving from key epoch 1 to 2 at version 6; hospital client-a is asked to "
        f"re-encrypt the model (hefl-admin job show {JOB} follows it)",
    ]


def test_rotate_uses_a_newer_epoch_that_exists_and_makes_none(
    keyauth: FakeKeyauth, training: FakeServer
) -> None:
    keyauth.key_epoch = 3

    status, out, _ = run(["job", "rotate", JOB, "--json"], keyauth, training)

    assert status == 0
    assert not [r for r in keyauth.requests if r.url.path == "/v1/key-epochs"]
    assert json.loads(out)["rotation"]["key_epoch"] == 3


def test_rotate_without_new_keys_is_refused_when_none_is_newer(
    keyauth: FakeKeyauth, training: FakeServer
) -> None:
    status, out, err = run(["job", "rotate", JOB, "--no-new-keys"], keyauth, training)

    assert (status, out) == (1, "")
    assert err.startswith(
        "hefl-admin: rotation_refused: keyauth's current key epoch 1 is not newer"
    )
    assert not [r for r in keyauth.requests if r.url.path in ("/v1/key-epochs", "/healthz")]


def test_show_prints_the_rotations_done_and_the_one_under_way(
    keyauth: FakeKeyauth, training: FakeServer
) -> None:
    training.jobs[JOB]["rotation"] = {
        "key_epoch": 3,
        "version": 9,
        "client_id": "client-b",
        "deadline": "2030-01-01T00:05:00Z",
    }
    training.statuses[JOB] = {
        "clients": {"client-a": {"client_name": "hospital-a"}},
        "rotations": {
            "done": [
                {
                    "from_epoch": 1,
                    "to_epoch": 2,
                    "version": 5,
                    "client_id": "client-a",
                    "at": "2030-01-01T00:01:00Z",
                }
            ],
            "asked": ["client-b"],
            "updates_retrained": 1,
            "detail": None,
        },
    }

    status, out, err = run(["job", "show", JOB], keyauth, training)

    assert (status, err) == (0, "")
    section = out[out.index("\nkey rotations:") :].splitlines()[1:]
    assert section == [
        "key rotations: 1 done, 1 update trained again",
        "  epoch 1 → 2 at version 5, re-encrypted by hospital-a (client-a) at 2030-01-01T00:01:00Z",
        "  under way: to epoch 3 at version 9, client-b asked until 2030-01-01T00:05:00Z",
    ]
