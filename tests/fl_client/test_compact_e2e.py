"""A study on the compact profile with top-k blocks, against real keyauth and fl_server.

keyauth generates the key epoch for ``n2048-s26``; the job's spec names that profile and
sends the top third of its blocks. Every update must carry 2 of the 3 blocks of 2,048
values at about 6 bytes a value, and every model the hospitals pull must pass the
integrity checks at that profile's tolerances.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import hefl_study
from fl_client import Runner, enroll
from fl_client.output import Reporter
from harness.admin import admin_token, create_job
from harness.enrollment import enrollment_token
from harness.services import keyauth_service
from harness.studies import study_mapping
from tests.fl_client.test_e2e import ADMIN_KEY, _fl_server, _settings, _wait_published

pytestmark = pytest.mark.e2e

COMPACT = "n2048-s26"


def test_a_compact_top_k_study_trains_to_the_end(tmp_path: Path) -> None:
    # Prepare: keyauth of the compact profile, a job whose mlp fills 3 blocks of 2,048
    # (13 x 64 + 64 + 64 x 64 + 64 + 64 + 1 = 5,121 values), top-k 2 of them
    mapping = study_mapping("compact", profile=COMPACT, inputs=13, target_updates=6)
    mapping["model"] = {"name": "mlp", "args": {"hidden": 64}}
    mapping["communication"] = {"compression": "top-k", "block_fraction": 0.5}
    mapping["training"] = {"lr": 0.05, "batch_size": 16}
    spec = hefl_study.spec_to_json(hefl_study.spec_from_mapping(mapping))
    with (
        keyauth_service(
            tmp_path / "keyauth", ADMIN_KEY, tmp_path / "ka.log", profile=COMPACT
        ) as ka,
        _fl_server(ka.url, tmp_path) as server,
    ):
        create_job(server, admin_token(ka.url, ADMIN_KEY), spec)
        runners = []
        for name in ("cleveland", "hungary"):
            settings = _settings(tmp_path, name, ka.url, server, "compact")
            enroll(settings, enrollment_token(ka.url, ADMIN_KEY, name))
            runners.append(Runner(settings, reporter=Reporter("quiet")))

        # Execute: three turns each, every one from the latest model
        results = []
        for turn in range(6):
            result = runners[turn % 2].run_round()
            assert result is not None
            results.append(result)
            status = _wait_published(ka.url, server, "compact", result.version)
        checked = [runner.evaluate_global() for runner in runners]
        for runner in runners:
            runner.close()

    # Assert: every update applied, each 2 of 3 blocks at about 6 bytes a value
    assert status["state"] == "done"
    assert status["updates_applied"] == 6
    assert status["profile"] == COMPACT
    for result in results:
        assert (result.wire["blocks_sent"], result.wire["n_blocks"]) == (2, 3)
        assert result.wire["bytes_per_value_sent"] <= 6.3
    assert {version for version, _ in checked} == {6}
