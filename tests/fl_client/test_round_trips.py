"""The requests of one update, counted on the wire between a hospital and the real fl_server.

keyauth and fl_server run under uvicorn on loopback; the hospital reaches fl_server
through ``harness.latency``'s proxy, which counts every HTTP request by method and path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import crypto
from fl_client import ClientSettings, Runner, enroll
from fl_client.output import Reporter
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.enrollment import enrollment_token
from harness.latency import DelayProxy, delay_proxy
from harness.services import keyauth_service, server_service
from harness.studies import study_json

pytestmark = pytest.mark.e2e

ADMIN_KEY = "fl-client-trips-admin-" + "k" * 20
JOB = "/v1/jobs/trips"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("services")
    with (
        keyauth_service(root / "keyauth", ADMIN_KEY, root / "keyauth.log") as keyauth,
        server_service(
            keyauth.url, root / "server", root / "fl_server.log", client_updates_per_minute="0"
        ) as server,
    ):
        create_job(
            server.url,
            admin_token(keyauth.url, ADMIN_KEY),
            study_json(
                "trips",
                profile=crypto.DEFAULT_PROFILE.name,
                inputs=13,
                training={"lr": 0.05, "batch_size": 16, "local_steps": 2},
                target_updates=1000,
            ),
        )
        yield keyauth.url, server.url


@pytest.fixture
def proxy(services: tuple[str, str]) -> Iterator[DelayProxy]:
    with delay_proxy(services[1]) as counting:
        yield counting


def _runner(
    services: tuple[str, str], proxy: DelayProxy, root: Path, site: str, **extra: Any
) -> Runner:
    keyauth, _ = services
    settings = ClientSettings(
        state_dir=root / site,
        keyauth_url=keyauth,
        server_url=proxy.url,
        job="trips",
        data="heart-disease",
        site=site,
        output="quiet",
        **extra,
    )
    enroll(settings, enrollment_token(keyauth, ADMIN_KEY, site))
    return Runner(settings, reporter=Reporter("quiet"))


def _status(services: tuple[str, str]) -> dict[str, Any]:
    keyauth, server = services
    return read_status(server, viewer_token(keyauth, ADMIN_KEY), "trips")


def test_in_steady_state_an_update_costs_one_request_and_keeps_its_metrics(
    services: tuple[str, str], proxy: DelayProxy, tmp_path: Path
) -> None:
    # Prepare: a hospital past its first round (it read the job and its spec, and may
    # have started the job), with the default round requests
    with _runner(services, proxy, tmp_path, "switzerland") as runner:
        first = runner.run_round()
        assert first is not None
        mark = proxy.mark()

        # Execute: three more updates, then the hospital stops
        results = [runner.run_round() for _ in range(3)]

    # Assert: one request each, the update (with the metrics) answered with the next
    # lease and model; the lease the last one carried is given back when the hospital stops
    assert proxy.since(mark) == [("POST", f"{JOB}/updates")] * 3 + [("DELETE", f"{JOB}/slots")]
    done = [r for r in [first, *results] if r is not None]
    assert len(done) == 4
    # each round trained on the model its previous update's answer carried: the one that
    # holds that update (no other hospital trains meanwhile)
    assert [r.base_version for r in done[1:]] == [r.version for r in done[:-1]]
    status = _status(services)
    reported = {m["version"] for m in status["metrics"]}
    assert {r.base_version for r in done} <= reported
    client = next(c for c in status["clients"].values() if c["client_name"] == "switzerland")
    assert client["updates_applied"] >= 4
    assert client["metrics_reports"] >= 4
    assert status["slots_in_use"] == 0


def test_combined_requests_cost_two_per_update_and_keep_their_metrics(
    services: tuple[str, str], proxy: DelayProxy, tmp_path: Path
) -> None:
    # Prepare: a hospital past its first round (it read the job and its spec, and may
    # have started the job), asking for the two requests of before
    with _runner(services, proxy, tmp_path, "cleveland", round_requests="combined") as runner:
        first = runner.run_round()
        assert first is not None
        mark = proxy.mark()

        # Execute: three more updates
        results = [runner.run_round() for _ in range(3)]

    # Assert: two requests each, the pull with the lease and the update with the metrics
    assert proxy.since(mark) == [("POST", f"{JOB}/leases"), ("POST", f"{JOB}/updates")] * 3
    status = _status(services)
    versions = [r.base_version for r in results if r is not None]
    assert len(versions) == 3
    reported = {m["version"] for m in status["metrics"]}
    assert {first.base_version, *versions} <= reported
    client = next(c for c in status["clients"].values() if c["client_name"] == "cleveland")
    assert client["updates_applied"] >= 4
    assert client["metrics_reports"] >= 4
    assert status["slots_in_use"] == 0  # each applied update gave its lease back


def test_separate_requests_still_work_at_six_per_update(
    services: tuple[str, str], proxy: DelayProxy, tmp_path: Path
) -> None:
    # Prepare: a hospital that sends the six requests of before (an older client's)
    with _runner(services, proxy, tmp_path, "hungary", round_requests="separate") as runner:
        first = runner.run_round()
        assert first is not None
        mark = proxy.mark()

        # Execute
        second = runner.run_round()

    # Assert
    assert second is not None
    assert proxy.since(mark) == [
        ("GET", JOB),
        ("POST", f"{JOB}/slots"),
        ("GET", f"{JOB}/model"),
        ("POST", f"{JOB}/updates"),
        ("DELETE", f"{JOB}/slots"),
        ("POST", f"{JOB}/metrics"),
    ]
    status = _status(services)
    assert second.base_version in {m["version"] for m in status["metrics"]}
    assert status["slots_in_use"] == 0
