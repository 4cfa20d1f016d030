"""The operator page in a real headless chromium, during a live run of keyauth and fl_server:
the token, the job table, the curves, the numbers against the status, a kill and a restart."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from harness.admin import admin_token, create_job
from harness.browser import browser_missing, open_page
from harness.parties import (
    TEST_PROFILE,
    Party,
    enroll,
    job_url,
    make_layout,
    random_blocks,
    start_job,
    update_envelope,
)
from harness.services import ServiceProcess, keyauth_service, new_admin_key, server_service
from harness.studies import study_json

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing())),
]

TRAINING, WAITING = "study-a", "study-b"
# model versions each hospital reports on (a version is reported once the model has it)
REPORTS = {"alpha": (1, 2, 3, 4), "beta": (2, 4)}
TIMEOUT_MS = 20_000


@dataclasses.dataclass
class Run:
    keyauth: ServiceProcess
    server: ServiceProcess
    viewer: str
    parties: dict[str, Party]
    admin_key: str

    def status(self, path: str = "/v1/status") -> dict[str, Any]:
        answer = httpx.get(
            f"{self.server.url}{path}",
            headers={"Authorization": f"Bearer {self.viewer}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def _post_update(server: str, party: Party, layout: Any, base: int, seed: int) -> None:
    values = random_blocks(layout, party.profile, seed) * 1e-3
    _, body = update_envelope(party, layout, values, base)
    answer = httpx.post(
        job_url(server, TRAINING, "/updates"), content=body, headers=party.auth, timeout=30
    )
    assert answer.status_code == 202, answer.text


def _post_metrics(server: str, party: Party, version: int, auroc: float, rows: int) -> None:
    answer = httpx.post(
        job_url(server, TRAINING, "/metrics"),
        json={"version": version, "metrics": {"n_samples": rows, "auroc": auroc, "loss": 0.5}},
        headers=party.auth,
        timeout=10,
    )
    assert answer.status_code == 202, answer.text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    # Prepare: both services, the status for token holders only, a job in training with two
    # hospitals' updates and reports, and a second job waiting for its initial model.
    work = tmp_path_factory.mktemp("ui")
    admin = new_admin_key()
    with (
        keyauth_service(
            work / "keyauth", admin, work / "keyauth.log", profile=TEST_PROFILE
        ) as keyauth,
        server_service(
            keyauth.url,
            work / "server",
            work / "server.log",
            client_updates_per_minute="0",
            status_access="token",
        ) as server,
    ):
        token = admin_token(keyauth.url, admin)
        for name in (TRAINING, WAITING):
            create_job(server.url, token, study_json(name, profile=TEST_PROFILE))
        parties = {name: enroll(keyauth.url, admin, name) for name in REPORTS}
        layout = make_layout(300, parties["alpha"].profile)
        start_job(
            server.url,
            TRAINING,
            parties["alpha"],
            layout,
            random_blocks(layout, parties["alpha"].profile, 1),
        )
        # versions 1..4: alpha on fresh bases, beta on stale ones
        for seed, (name, base) in enumerate(
            [("alpha", 0), ("beta", 0), ("alpha", 2), ("beta", 1)], start=10
        ):
            _post_update(server.url, parties[name], layout, base, seed)
        for name, versions in REPORTS.items():
            for i, version in enumerate(versions):
                _post_metrics(server.url, parties[name], version, 0.6 + 0.05 * i, 100 + len(name))
        viewer = httpx.post(
            f"{keyauth.url}/v1/viewer/token", headers={"X-Admin-Key": admin}, timeout=10
        )
        assert viewer.status_code == 200, viewer.text
        yield Run(keyauth, server, viewer.json()["access_token"], parties, admin)


def _text(page: Any, selector: str) -> str:
    text: str = page.locator(selector).first.text_content(timeout=TIMEOUT_MS)
    return text.strip()


def test_status_needs_a_token_and_a_viewer_token_reads_it(run: Run) -> None:
    anonymous = httpx.get(f"{run.server.url}/v1/status", timeout=10)
    job = httpx.get(f"{run.server.url}/v1/jobs/{TRAINING}/status", timeout=10)
    page = httpx.get(f"{run.server.url}/ui", timeout=10)

    assert anonymous.status_code == 401
    assert job.status_code == 401
    assert page.status_code == 200  # the page holds no data: what it reads is guarded
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert [j["name"] for j in run.status()["jobs"]] == [TRAINING, WAITING]


def test_page_shows_the_status_and_recovers_from_a_restart(run: Run, tmp_path: Path) -> None:
    with open_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        # Execute: open the page, which asks for a token, and give it the viewer's.
        page.goto(f"{run.server.url}/ui?refresh_ms=500")
        page.wait_for_selector("#login:not([hidden])", timeout=TIMEOUT_MS)
        page.fill("#token-input", run.viewer)
        page.click("#login-form button")
        page.wait_for_selector(f"#jobs tr[data-job={TRAINING}]", timeout=TIMEOUT_MS)
        page.wait_for_selector("#chart-version canvas", timeout=TIMEOUT_MS)
        page.wait_for_selector("body[data-connection=ok]", timeout=TIMEOUT_MS)

        # Assert: the job table, against GET /v1/status
        jobs = {j["name"]: j for j in run.status()["jobs"]}
        for name, job in jobs.items():
            row = f"#jobs tr[data-job={name}]"
            assert _text(page, f"{row} td[data-field=state]").startswith(job["state"])
            target = job["target_updates"]
            assert _text(page, f"{row} td[data-field=version]") == f"{job['version']} / {target}"
        assert jobs[TRAINING]["state"] == "training"
        assert jobs[WAITING]["state"] == "waiting_for_initial_model"

        # the selected job and its hospitals, against GET /v1/jobs/{job}/status
        status = run.status(f"/v1/jobs/{TRAINING}/status")
        assert _text(page, "#job-facts [data-field=updates_applied]") == str(
            status["updates_applied"]
        )
        assert status["updates_applied"] == 4
        for client_id, client in status["clients"].items():
            row = f"#clients tr[data-client='{client_id}']"
            assert _text(page, f"{row} td[data-field=client_name]") == client["client_name"]
            assert _text(page, f"{row} td[data-field=updates_applied]") == str(
                client["updates_applied"]
            )
            assert _text(page, f"{row} td[data-field=rows]") == str(
                client["latest_metrics"]["n_samples"]
            )
            shown = page.locator(f"{row} td[data-field=mean_staleness]").get_attribute("data-value")
            assert shown is not None
            assert float(shown) == pytest.approx(client["mean_staleness"])
        by_name = {c["client_name"]: c for c in status["clients"].values()}
        assert by_name["beta"]["mean_staleness"] == pytest.approx(np.mean([1, 2]))
        assert _text(page, "#integrity-facts [data-field=integrity_state]") == "healthy"
        assert _text(page, "#integrity-facts [data-field=key_epoch]") == str(status["key_epoch"])
        assert _text(page, "#job-facts [data-field=dp_epsilon]") == "not enabled"

        # the curves: one point per version with a pooled AUROC, a series per hospital
        versions = sorted({v for vs in REPORTS.values() for v in vs})
        assert [m["version"] for m in status["metrics"]] == versions
        assert page.get_attribute("#chart-version", "data-points") == str(len(versions))
        assert page.get_attribute("#chart-time", "data-points") == str(len(versions))
        plotted = page.evaluate(
            "() => { const c = window.heflPage.charts['chart-version'].chart;"
            " return {series: c.series.map(s => s.label), data: c.data}; }"
        )
        ids = sorted(status["clients"])  # a series per hospital, by client id
        assert plotted["series"][2:] == [status["clients"][i]["client_name"] for i in ids]
        # the pooled curve: each hospital's latest AUROC so far, weighted by its rows; it
        # ends at the pooled value the stop rule reads
        rows = {cid: c["latest_metrics"]["n_samples"] for cid, c in status["clients"].items()}
        latest: dict[str, float] = {}
        expected_pooled = []
        for m in status["metrics"]:
            latest.update({cid: v["auroc"] for cid, v in m["clients"].items()})
            total = sum(rows[cid] for cid in latest)
            expected_pooled.append(sum(rows[cid] * v for cid, v in latest.items()) / total)
        assert plotted["data"][1] == pytest.approx(expected_pooled)
        assert plotted["data"][1][-1] == pytest.approx(status["pooled_metrics"]["auroc"]["value"])
        for i, client_id in enumerate(ids, start=2):
            expected = [m["clients"].get(client_id, {}).get("auroc") for m in status["metrics"]]
            assert plotted["data"][i] == pytest.approx(expected)
            assert sum(v is not None for v in expected) == len(
                REPORTS[status["clients"][client_id]["client_name"]]
            )
        histogram = page.evaluate("() => window.heflPage.charts['chart-staleness'].chart.data")
        assert dict(zip(histogram[0], histogram[1], strict=True)) == {
            int(k): v for k, v in status["staleness_histogram"].items()
        }
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        # Execute: kill the server; the page says it lost the connection
        run.server.kill()
        page.wait_for_selector("body[data-connection=lost]", timeout=TIMEOUT_MS)
        assert "connection lost" in _text(page, "#connection")

        # then a new server on the same port and state: the page recovers by itself. It
        # says "reconnected" until its next refresh (500 ms here), which a loaded machine
        # can pass before the test reads it: every text the line shows is recorded.
        page.evaluate(
            "() => { const line = document.getElementById('connection'); window.heflShown = [];"
            " new MutationObserver(records => records.forEach(r => r.addedNodes.forEach("
            " n => window.heflShown.push(n.textContent)))).observe(line, {childList: true}); }"
        )
        run.server.start()  # the same process object: the fixture stops it at the end
        page.wait_for_selector("body[data-connection=ok]", timeout=TIMEOUT_MS)
        shown = page.evaluate("() => window.heflShown")
        assert any(text.startswith("reconnected") for text in shown), shown
        page.wait_for_selector(f"#jobs tr[data-job={TRAINING}]", timeout=TIMEOUT_MS)
        assert _text(page, "#job-facts [data-field=updates_applied]") == "4"
        assert page.get_attribute("#chart-version", "data-points") == str(len(versions))
        # the administrator pauses one job and stops the other: the page follows by itself
        admin = {"Authorization": f"Bearer {admin_token(run.keyauth.url, run.admin_key)}"}
        for name, action in ((TRAINING, "pause"), (WAITING, "stop")):
            answer = httpx.post(job_url(run.server.url, name, f"/{action}"), headers=admin)
            assert answer.status_code == 200, answer.text
        page.wait_for_function(
            "() => document.querySelector('#jobs tr[data-job="
            + TRAINING
            + "] td[data-field=state]')"
            ".textContent.startsWith('paused')",
            timeout=TIMEOUT_MS,
        )
        page.wait_for_function(
            "() => document.querySelector('#jobs tr[data-job="
            + WAITING
            + "] td[data-field=state]')"
            ".textContent.startsWith('done')",
            timeout=TIMEOUT_MS,
        )
        assert _text(page, f"#jobs tr[data-job={WAITING}] td[data-field=state]") == "done (stopped)"
        assert _text(page, "#job-facts [data-field=updates_applied]") == "4"

        # no script error; the failed fetches while the server was down are the browser's
        assert [e for e in errors if "Failed to load resource" not in e] == []
