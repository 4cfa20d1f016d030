"""kill -9 under load, real uvicorn: every acknowledged update is applied exactly once in its
own job of two, and no enrollment is half done or orphaned (short forms of
``benchmarks.hostile``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.keyauth_crash import crash_keyauth
from harness.server_crash import JOBS, crash_server

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("shards", [0, 2], ids=["in-process", "2-shards"])
def test_fl_server_killed_under_load_loses_no_acknowledged_update_in_either_job(
    tmp_path: Path, shards: int
) -> None:
    result = crash_server(tmp_path, kills=2, clients=3, seed=1, shards=shards)

    assert result.restarts == 2
    assert result.model_resumed
    assert sorted(result.jobs) == sorted(JOBS)
    for job in result.jobs.values():
        assert job["acknowledged"] > 0
        # Exactly once, in its own job: the version counts each applied update, and the
        # decrypted model is the job's initial model plus the plaintext sum of the updates
        # acknowledged in that job, at their applied weights.
        assert job["applied_version"] == job["applied_count"] == job["acknowledged"]
        assert job["max_error"] <= job["error_bound"]
    assert result.retries > 0  # the clients did have to recover by themselves


def test_keyauth_killed_during_enrollment_keeps_every_client_and_key(tmp_path: Path) -> None:
    result = crash_keyauth(tmp_path, kills=2, seed=1)

    assert result.unexplained_clients == 0
    # A kill between keyauth's commit and the answer used to orphan the client (enrolled,
    # its secret lost). Now the hospital resends its token and gets the same enrollment.
    assert result.orphaned == 0
    assert result.clients_listed == result.enrolled_acknowledged
    assert result.credentials_working == result.clients_listed
    assert result.tokens_dead_after_confirmation
    assert result.secret_context_unchanged
