"""One bad update does not end a study (issue 13), against real keyauth and fl_servers.

Two heart-disease hospitals (the ``fl_client`` library's ``Runner`` over HTTP, bundled
Cleveland and Hungary rows, profile ``test-n2048``) train a job to its target while an
enrolled attacker posts one corrupted update: (a) one flipped bit, (b) a block under
another key authority's key, (n) values that put the model out of range. A twin server
on the same keyauth gets every honest update and never the bad one
(``harness.integrity``), so its model is the model that never received it. Also (d): the
server's JSON parsers answer 4xx, never 500, to bodies nested 1,000 deep, under uvicorn.
(c) and (e) are shown under uvicorn in ``tests/fl_server/test_server_keys_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fl_client.events import IntegrityFailed
from harness.admin import create_job
from harness.integrity import CORRUPTIONS, IntegrityRun, run_study
from harness.live import live_job
from harness.parties import TEST_PROFILE
from harness.studies import study_json

pytestmark = pytest.mark.e2e

TARGET, INJECT_AFTER = 16, 4
# Two CKKS models from the same ciphertexts, up to the bound (they are bit for
# bit the same: the ring's addition is exact).
REPAIR_BOUND = 1e-6
# The final AUROC of each hospital on its held-out rows, attacked run against a clean
# one. Which update lands on which version differs from run to run (two asynchronous
# hospitals), and that alone moves it: three clean runs of this study (16 updates) gave
# Cleveland 0.911-0.918 and Hungary 0.833-0.842, the six benchmark runs (24 updates,
# attacked) 0.912-0.917 and 0.832-0.838. The tolerance is three times the widest spread
# (0.009); a study the bad update ruined ends nowhere near (it stops, or scores ~0.5).
AUROC_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> IntegrityRun:
    """The same study without an attacker."""
    return run_study(
        tmp_path_factory.mktemp("clean"), None, target_updates=TARGET, inject_after=INJECT_AFTER
    )


@pytest.mark.parametrize("kind", list(CORRUPTIONS), ids=["a-flipped-bit", "b-other-key", "n-range"])
def test_a_corrupted_update_is_found_removed_exactly_and_the_study_goes_on(
    tmp_path: Path, kind: str, clean: IntegrityRun
) -> None:
    # Execute: the study, with the attacker's update after honest update INJECT_AFTER
    run = run_study(tmp_path, kind, target_updates=TARGET, inject_after=INJECT_AFTER)

    # Assert: injected once, repaired once, by removing exactly that update
    bad = run.mirror.bad
    assert bad is not None
    integrity = run.status["integrity"]
    (repair,) = integrity["repairs"]
    (seen,) = run.mirror.repairs
    repaired = int(repair["version"])
    assert repair["first_bad_version"] == bad.version
    assert [
        (r["update_id"], r["client_name"], r["version"], r["weight"]) for r in repair["removed"]
    ] == [(bad.update_id, "attacker", bad.version, 1.0)]
    assert integrity["updates_removed"] == 1
    assert integrity["state"] == "healthy"

    # Detection within one version: the first check of a version holding the bad update
    # fails and is reported; no version holding it is vouched for or trained on.
    corrupted = range(bad.version, repaired)
    checks = [(version, ok) for _, version, ok in run.mirror.checks if version in corrupted]
    assert checks, "nobody checked a corrupted version"
    assert not any(ok for _, ok in checks), checks
    assert checks[0][0] - bad.version <= 1, (bad.version, checks)
    assert not [p for p in run.mirror.honest if p.base_version in corrupted]
    failed = [e for events in run.events.values() for e in events if isinstance(e, IntegrityFailed)]
    assert failed
    assert all(e.version in corrupted and e.reported for e in failed)
    assert {e.check for e in failed} <= {"range", "canary"}

    # The repaired model is the model that never received the bad update (the twin's,
    # with the same honest updates: those applied after the bad one stay).
    assert run.repaired_max_abs is not None
    assert run.repaired_max_abs <= REPAIR_BOUND
    assert run.repaired_identical
    assert seen.honest == len([p for p in run.mirror.honest if p.version < repaired])

    # The attacker is quarantined: its next update is refused, and the status says so.
    assert run.refused_after_repair == (403, "client_quarantined")
    assert [q["client_name"] for q in integrity["quarantined"]] == ["attacker"]

    # Training goes on to the target, to the clean run's accuracy.
    assert (run.status["state"], run.status["stop_reason"]) == ("done", "target_updates")
    assert run.status["updates_applied"] == TARGET
    assert run.final_max_abs <= REPAIR_BOUND
    assert run.final_identical
    assert {s.stop_reason for s in run.summaries.values()} == {"job_done"}
    assert set(run.auroc) == set(clean.auroc)
    for site, auroc in run.auroc.items():
        assert abs(auroc - clean.auroc[site]) <= AUROC_TOLERANCE, (site, auroc, clean.auroc)


NESTED = b"[" * 1000 + b"]" * 1000
NESTED_BODIES = [
    ("PUT", "/layout", NESTED),
    ("PUT", "/layout", b'{"format": 2, "block_size": 2048, "tensors": ' + NESTED + b"}"),
    ("POST", "/metrics", b'{"version": 1, "metrics": ' + NESTED + b"}"),
    ("POST", "/integrity", b'{"a":' * 1000 + b"1" + b"}" * 1000),
]


def test_json_nested_a_thousand_deep_is_a_4xx_under_uvicorn(tmp_path: Path) -> None:
    # Prepare: a job in training, and a second job created but without its layout yet
    with live_job(tmp_path, "hospital", n_params=100, seed=1) as live:
        create_job(live.server.url, live.admin_token, study_json("fresh", profile=TEST_PROFILE))
        before = httpx.get(live.url("/model"), headers=live.party.auth)
        fresh = f"{live.server.url}/v1/jobs/fresh"

        # Execute
        answers = [
            httpx.request(method, f"{fresh}{path}", content=body, headers=live.party.auth)
            for method, path, body in NESTED_BODIES[:2]
        ] + [
            httpx.request(method, live.url(path), content=body, headers=live.party.auth)
            for method, path, body in NESTED_BODIES
        ]
        spec = httpx.post(
            f"{live.server.url}/v1/jobs",
            content=b'{"name": "deep", "server": ' + NESTED + b"}",
            headers={"Authorization": f"Bearer {live.admin_token}"},
        )
        after = httpx.get(live.url("/model"), headers=live.party.auth)
        layout = httpx.get(f"{fresh}/layout", headers=live.party.auth)
        alive = live.server.alive()

    # Assert: each a 4xx problem naming its body, the services up, nothing changed
    for answer in [*answers, spec]:
        assert 400 <= answer.status_code < 500, (answer.request.url, answer.status_code)
        assert answer.headers["content-type"] == "application/problem+json"
    assert [a.json()["code"] for a in answers[:2]] == ["layout_invalid"] * 2
    assert spec.json()["code"] == "spec_invalid"
    assert alive
    assert after.content == before.content
    assert (layout.status_code, layout.json()["code"]) == (404, "no_layout")
