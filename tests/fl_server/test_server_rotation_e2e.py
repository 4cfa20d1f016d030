"""Key rotation of a running study under load: real keyauth and fl_server under uvicorn,
three hospitals training over HTTP, one revoked, the job rotated (issue 16, "Done when")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.rotation import SITES, RotationRun, decrypt_with, run_rotation

pytestmark = pytest.mark.e2e

PROFILE = "test-n2048"
TARGET = 40


def check_run(run: RotationRun) -> None:
    status = run.status
    revoked = SITES[-1]
    # training went on to the target with the two hospitals left
    assert status["state"] == "done"
    assert status["stop_reason"] == "target_updates"
    assert status["updates_applied"] == TARGET
    assert {run.outcomes[s] for s in SITES[:-1]} == {"job_done"}
    assert run.outcomes[revoked] == "client_revoked"
    # the job is under the new epoch, re-encrypted by a hospital that is not revoked
    assert status["key_epoch"] == 2
    (done,) = status["rotations"]["done"]
    assert (done["from_epoch"], done["to_epoch"]) == (1, 2)
    assert run.reencrypted_by
    assert revoked not in run.reencrypted_by
    # nothing lost; every update refused for the rotation was trained again
    assert run.lost == 0
    if run.restarted is None:  # the server counts refusals since it started
        assert run.retrained_by_clients <= status["rotations"]["updates_retrained"]
    # the revoked hospital gets no token, so no secret context of the new epoch
    assert run.revoked_token_answer == 403
    # the new key reads the final model; the revoked hospital's old key reads garbage
    true, ok = decrypt_with(run.new_context, run.final_model, run.layout, PROFILE)
    assert ok.ok
    garbage, refused = decrypt_with(
        run.revoked_secret_context, run.final_model, run.layout, PROFILE
    )
    assert not refused.ok
    assert float(np.max(np.abs(garbage - true))) > 1.0


def test_a_running_job_is_rotated_under_load_and_a_revoked_hospital_is_locked_out(
    tmp_path: Path,
) -> None:
    run = run_rotation(tmp_path, profile=PROFILE, target_updates=TARGET, rotate_at=8)
    check_run(run)
    assert run.rotated_at_version >= 9


def test_a_server_killed_during_a_rotation_recovers_to_one_epoch_and_rotates_again(
    tmp_path: Path,
) -> None:
    run = run_rotation(
        tmp_path, profile=PROFILE, target_updates=TARGET, rotate_at=8, kill_after_request=True
    )
    check_run(run)
    # after the kill the job was wholly on one epoch: its model reads under that key
    assert run.restarted is not None
    epoch, model = run.restarted
    key = run.old_context if epoch == 1 else run.new_context
    other = run.new_context if epoch == 1 else run.old_context
    assert decrypt_with(key, model, run.layout, PROFILE)[1].ok
    assert not decrypt_with(other, model, run.layout, PROFILE)[1].ok
