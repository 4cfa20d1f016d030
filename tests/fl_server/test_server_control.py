"""A job's control: pause, resume and stop, and each stop rule; durable through a crash."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_server.domain import JobState, StopReason
from fl_server.errors import (
    JobNotPausedError,
    JobNotTrainingError,
    JobPausedError,
    UpdateIdReusedError,
)
from fl_server.job_service import JobService
from fl_server.material import KeyauthMaterial
from fl_server.store import FileStore
from hefl_wire import AccessClaims
from tests.fl_server.helpers import (
    JOB,
    Hospital,
    body_reader,
    client_claims,
    crash_image,
    push_update,
    report_metrics,
    start_job,
    wait_published,
)

pytestmark = pytest.mark.anyio

MakeJob = Callable[..., JobService]


class Clock:
    """Seconds since the epoch that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_timed(make_job: MakeJob, clock: Clock) -> MakeJob:
    """Job services on this test's clock."""
    return partial(make_job, clock=clock)


async def report(job: JobService, client: AccessClaims, **metrics: float) -> None:
    await report_metrics(job, client, job.view().version, metrics)


async def test_a_paused_job_refuses_slots_and_updates_but_serves_its_model(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims
) -> None:
    # Prepare
    job = make_timed()
    await start_job(job, client, hospital)
    values = hospital.random_values(1)
    uid, envelope = hospital.update(values, base_version=0)

    # Execute
    paused = await job.pause()
    again = await job.pause()  # a no-op

    # Assert: refused while paused, not applied; the model is still served.
    assert (paused.state, again.state) == (JobState.PAUSED, JobState.PAUSED)
    with pytest.raises(JobPausedError) as info:
        job.acquire_slot(client)
    assert (info.value.code, info.value.http_status) == ("job_paused", 409)
    with pytest.raises(JobPausedError):
        await push_update(job, client, envelope)
    assert job.view().updates_applied == 0
    assert job.download_model(client, None, None).version == 0
    resumed = await job.resume()
    assert resumed.state is JobState.TRAINING
    ack = await push_update(job, client, envelope)  # the client sends the same update again
    assert (ack.receipt.update_id, ack.receipt.version, ack.duplicate) == (uid, 1, False)


async def test_a_retry_of_an_applied_update_is_answered_while_paused(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims
) -> None:
    job = make_timed()
    await start_job(job, client, hospital)
    _, envelope = hospital.update(hospital.random_values(1), base_version=0)
    first = await push_update(job, client, envelope)

    await job.pause()

    again = await push_update(job, client, envelope)
    assert again.duplicate
    assert again.receipt == first.receipt


async def test_pause_and_resume_before_the_initial_model(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims
) -> None:
    job = make_timed()
    assert (await job.pause()).state is JobState.PAUSED
    await start_job(job, client, hospital)
    assert job.view().state is JobState.PAUSED
    assert (await job.resume()).state is JobState.TRAINING

    with pytest.raises(JobNotPausedError) as info:
        await job.resume()
    assert (info.value.code, info.value.http_status) == ("job_not_paused", 409)


async def test_stop_is_final_and_keeps_its_reason(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims
) -> None:
    job = make_timed()
    await start_job(job, client, hospital)
    await job.pause()

    stopped = await job.stop()
    again = await job.stop()  # a no-op

    assert (stopped.state, stopped.stop_reason) == (JobState.DONE, StopReason.STOPPED)
    assert again == stopped
    for refused in (job.pause, job.resume):
        with pytest.raises((JobNotTrainingError, JobNotPausedError)):
            await refused()
    with pytest.raises(JobNotTrainingError) as info:
        job.acquire_slot(client)
    assert "stopped" in info.value.detail
    with pytest.raises(JobNotTrainingError):
        await push_update(
            job, client, hospital.update(hospital.random_values(1), base_version=0)[1]
        )


async def test_pausing_a_done_job_is_refused(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims
) -> None:
    job = make_timed()
    await job.stop()

    with pytest.raises(JobNotTrainingError) as info:
        await job.pause()

    assert (info.value.code, info.value.http_status) == ("job_not_training", 409)
    with pytest.raises(JobNotTrainingError):
        await job.receive_layout(client, body_reader(hospital.layout.to_json()))


async def test_pause_resume_and_stop_survive_a_crash(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    job = make_timed(live)
    await start_job(job, client, hospital)
    await job.pause()
    paused = make_timed(crash_image(live, tmp_path / "paused"))
    await job.resume()
    await job.stop()
    stopped = make_timed(crash_image(live, tmp_path / "stopped"))

    assert paused.view().state is JobState.PAUSED
    assert (stopped.view().state, stopped.view().stop_reason) == (
        JobState.DONE,
        StopReason.STOPPED,
    )


async def test_the_target_number_of_updates_ends_the_job(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims
) -> None:
    job = make_timed(target_updates=2)
    await start_job(job, client, hospital)
    for k in range(2):
        await push_update(
            job, client, hospital.update(hospital.random_values(k), base_version=k)[1]
        )

    view = job.view()
    assert (view.state, view.stop_reason, view.updates_applied) == (
        JobState.DONE,
        StopReason.TARGET_UPDATES,
        2,
    )
    (rule,) = job.status().stop_rules
    assert (rule.rule, rule.target, rule.progress, rule.met) == ("target_updates", 2, 2, True)


async def test_wall_time_counts_only_training_and_survives_a_crash(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims, clock: Clock, tmp_path: Path
) -> None:
    # Prepare: a 100 s budget; 30 s waiting for the initial model do not count.
    live = tmp_path / "live"
    job = make_timed(live, max_wall_seconds=100)
    clock.now += 30
    await start_job(job, client, hospital)

    # Execute: 60 s training, 500 s paused, then a crash after 25 s more training.
    clock.now += 60
    job.tick().result()
    await job.pause()
    clock.now += 500
    job.tick().result()
    spent_paused = job.view().training_seconds
    await job.resume()
    clock.now += 25
    job.tick().result()  # saves the time spent (at most every 10 s)
    clock.now += 5  # lost in the crash: not saved yet
    recovered = make_timed(crash_image(live, tmp_path / "image"), max_wall_seconds=100)

    # Assert: the budget kept what was spent before the crash, not the paused time.
    assert spent_paused == 60
    assert recovered.view().training_seconds == 85
    assert recovered.view().state is JobState.TRAINING
    clock.now += 14
    recovered.tick().result()
    assert recovered.view().state is JobState.TRAINING
    clock.now += 2
    recovered.tick().result()
    view = recovered.view()
    assert (view.state, view.stop_reason) == (JobState.DONE, StopReason.MAX_WALL_SECONDS)
    assert view.training_seconds == 101
    clock.now += 50
    assert recovered.view().training_seconds == 101  # a done job's clock has stopped


async def test_a_clean_shutdown_keeps_the_training_time_to_the_second(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims, clock: Clock, tmp_path: Path
) -> None:
    job = make_timed(tmp_path / "state", max_wall_seconds=100)
    await start_job(job, client, hospital)
    clock.now += 7
    job.close()

    assert make_timed(tmp_path / "state", max_wall_seconds=100).view().training_seconds == 7


async def test_the_metric_rule_counts_once_enough_sites_report(
    make_timed: MakeJob,
    hospital: Hospital,
    material: KeyauthMaterial,
    signing_key: Ed25519PrivateKey,
) -> None:
    # Prepare: done once the row-weighted AUROC of 2 sites' latest reports reaches 0.8.
    job = make_timed(metric="auroc", value=0.8, min_sites=2)
    a = client_claims(material, signing_key, "site-a")
    b = client_claims(material, signing_key, "site-b")
    await start_job(job, a, hospital)

    # Execute + Assert
    await report(job, a, auroc=0.95, n_samples=100)
    (rule,) = job.status().stop_rules
    assert (rule.progress, rule.sites, rule.min_sites, rule.met) == (0.95, 1, 2, False)
    assert job.view().state is JobState.TRAINING  # above the target, but one site only
    await report(job, b, auroc=0.6, n_samples=300)
    assert job.status().pooled_metrics["auroc"].value == pytest.approx(0.6875)
    assert job.view().state is JobState.TRAINING
    await report(job, b, auroc=0.85, n_samples=300)  # b's latest report replaces its first
    status = job.status()
    assert status.pooled_metrics["auroc"].value == pytest.approx(0.875)
    assert status.pooled_metrics["auroc"].sites == 2
    assert (status.job.state, status.job.stop_reason) == (JobState.DONE, StopReason.TARGET_METRIC)
    assert status.clients["site-b"].latest_metrics is not None
    assert status.clients["site-b"].latest_metrics.values == {"auroc": 0.85}


async def test_a_loss_target_is_reached_at_or_below_it(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims
) -> None:
    job = make_timed(metric="loss", value=0.5, min_sites=1)
    await start_job(job, client, hospital)

    await report(job, client, loss=0.6, n_samples=10)
    assert job.view().state is JobState.TRAINING
    await report(job, client, loss=0.5, n_samples=10)

    assert job.view().stop_reason is StopReason.TARGET_METRIC


async def test_stopping_adds_a_partly_filled_buffer_and_a_restart_rebuilds_it(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims, tmp_path: Path
) -> None:
    # Prepare: two updates acknowledged into a buffer of three.
    live = tmp_path / "live"
    job = make_timed(live, buffer_size=3, staleness="constant")
    await start_job(job, client, hospital)
    updates = [hospital.random_values(k) for k in (1, 2)]
    envelopes = [hospital.update(u, base_version=0)[1] for u in updates]
    acks = [await push_update(job, client, e) for e in envelopes]
    assert (job.view().version, job.status().updates_buffered) == (0, 2)

    # Execute
    await job.stop()
    wait_published(job)
    served = job.snapshot().to_bytes()
    recovered = make_timed(crash_image(live, tmp_path / "image"))

    # Assert: every acknowledged update is in the model, before and after the restart.
    assert [a.receipt.version for a in acks] == [1, 1]
    assert (job.view().version, job.status().updates_buffered) == (1, 0)
    version, model = hospital.decrypt_model(served)
    assert version == 1
    assert np.max(np.abs(model - sum(updates))) <= hospital.profile.error_bound(3)
    wait_published(recovered)
    assert recovered.snapshot().to_bytes() == served
    assert (await push_update(recovered, client, envelopes[0])).receipt == acks[0].receipt


async def test_a_stop_rule_met_before_a_crash_is_met_again_at_startup(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims, tmp_path: Path
) -> None:
    # The report is durable; the crash came before the job was marked done.
    live = tmp_path / "live"
    job = make_timed(live, metric="accuracy", value=0.7, min_sites=1)
    await start_job(job, client, hospital)
    job.close()
    store = FileStore(live / "jobs" / JOB)
    store.append_metrics(
        {
            "client_id": client.client_id,
            "client_name": client.client_name,
            "version": 0,
            "metrics": {"accuracy": 0.75, "n_samples": 20},
            "received_at": 1.0,
        }
    )
    store.close()

    recovered = make_timed(live)

    assert recovered.view().stop_reason is StopReason.TARGET_METRIC
    assert recovered.view().state is JobState.DONE


async def test_a_stopped_job_still_refuses_an_update_id_reused_for_other_content(
    make_timed: MakeJob, hospital: Hospital, client: AccessClaims
) -> None:
    job = make_timed()
    await start_job(job, client, hospital)
    uid = uuid.uuid4()
    await push_update(
        job, client, hospital.update(hospital.random_values(1), base_version=0, update_id=uid)[1]
    )
    await job.stop()

    other = hospital.update(hospital.random_values(2), base_version=0, update_id=uid)[1]
    with pytest.raises(UpdateIdReusedError):
        await push_update(job, client, other)
    assert job.view().updates_applied == 1
