"""Hospitals against real keyauth and fl_server under uvicorn on free loopback ports.

The administrator creates each job from a spec (an admin token from keyauth, then
``POST /v1/jobs``). The clients take turns (each pulls the model its predecessor's update
produced), so the encrypted run and the plaintext run of the same schedule, seed and data
are comparable exactly: their accuracies must agree within one point, their weights
within CKKS noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import crypto
from fl_client import ClientSettings, Runner, enroll, load_client_data
from fl_client.models import MODELS
from fl_client.output import Reporter
from fl_client.reference import plaintext_federated, pooled_eval
from fl_client.state import EnvelopeFile
from fl_client.training import TrainConfig, local_round, round_seed
from fl_client.updates import CompressionConfig
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.enrollment import enrollment_token
from harness.services import keyauth_service, server_service
from harness.studies import study_json

pytestmark = pytest.mark.e2e

ADMIN_KEY = "fl-client-e2e-admin-" + "k" * 20
HOSPITALS = ("cleveland", "hungary", "va-long-beach")
ROUNDS = 5


@pytest.fixture(scope="module")
def keyauth_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("keyauth")
    with keyauth_service(root / "state", ADMIN_KEY, root / "keyauth.log") as keyauth:
        yield keyauth.url


def heart_study(name: str, target_updates: int, **training: Any) -> str:
    """The bundled heart-disease hospitals (13 encoded features) as a factory's data: the
    spec's canonical JSON, as ``POST /v1/jobs`` takes it."""
    return study_json(
        name,
        profile=crypto.DEFAULT_PROFILE.name,
        inputs=13,
        training={"lr": 0.05, "batch_size": 16, **training},
        target_updates=target_updates,
        # every update at weight 1, as the plaintext schedule these tests compare with
        weighting="uniform",
    )


@contextmanager
def _fl_server(keyauth: str, root: Path) -> Iterator[str]:
    with server_service(
        keyauth, root / "state", root / "fl_server.log", client_updates_per_minute="0"
    ) as server:
        yield server.url


def _wait_published(keyauth: str, server: str, job: str, version: int) -> dict[str, Any]:
    """Downloads may lag the applied model briefly; a turn starts from the latest one."""
    deadline = time.monotonic() + 30
    viewer = viewer_token(keyauth, ADMIN_KEY)
    while True:
        status = read_status(server, viewer, job)
        if status["published_version"] >= version:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.02)


def _settings(
    root: Path, name: str, keyauth: str, server: str, job: str, **extra: Any
) -> ClientSettings:
    return ClientSettings(
        state_dir=root / name,
        keyauth_url=keyauth,
        server_url=server,
        job=job,
        data="heart-disease",
        site=name,
        output="quiet",
        **extra,
    )


def test_three_hospitals_on_heart_disease_match_the_plaintext_schedule(
    keyauth_url: str, tmp_path: Path
) -> None:
    # Prepare: three enrolled hospitals, a job of 3 x ROUNDS updates
    schedule = [i for _ in range(ROUNDS) for i in range(len(HOSPITALS))]
    with _fl_server(keyauth_url, tmp_path) as server:
        create_job(server, admin_token(keyauth_url, ADMIN_KEY), heart_study("heart", len(schedule)))
        runners = []
        for name in HOSPITALS:
            # taking turns by hand, each from the latest model: each round leases it when
            # it starts (round_requests=one would train on the model its hospital's last
            # update was answered with, two turns older here)
            settings = _settings(
                tmp_path, name, keyauth_url, server, "heart", round_requests="combined"
            )
            enroll(settings, enrollment_token(keyauth_url, ADMIN_KEY, name))
            runners.append(Runner(settings, reporter=Reporter("quiet")))

        # Execute: the hospitals take turns; each starts from the latest model
        acks = []
        for turn, index in enumerate(schedule):
            result = runners[index].run_round()
            assert result is not None
            assert result.base_version == turn
            assert result.staleness == 0
            acks.append(result)
            status = _wait_published(keyauth_url, server, "heart", result.version)
        final = [runner.evaluate_global() for runner in runners]
        done = [runner.run_round() for runner in runners]
        for runner in runners:
            runner.close()

    # Assert: the server applied every update once, at weight 1
    assert status["state"] == "done"
    assert status["updates_applied"] == len(schedule)
    assert status["staleness_histogram"] == {"0": len(schedule)}
    assert all(ack.weight == 1.0 for ack in acks)
    assert done == [None, None, None]
    assert {v for v, _ in final} == {len(schedule)}
    reported = {m["version"] for m in status["metrics"]}
    assert reported == set(range(len(schedule)))

    # the same schedule in plaintext, with the very same data, seed and local training
    datas = [load_client_data("heart-disease", name) for name in HOSPITALS]
    plain = plaintext_federated(
        datas,
        schedule,
        factory=MODELS["logistic"],
        seeds=[0, 0, 0],  # the spec's: one initial model, one batch-order seed
        init_client=0,
        train_config=TrainConfig(epochs=1, batch_size=16, lr=0.05, task="binary"),
        compression=CompressionConfig(),
        block_size=crypto.get_profile("n4096-s40").block_size,
    )
    hefl = pooled_eval([evaluation for _, evaluation in final])
    print(
        f"\nheart disease, {len(HOSPITALS)} hospitals x {ROUNDS} rounds: "
        f"hefl accuracy {hefl.accuracy:.4f} (n={hefl.n_samples}), "
        f"plaintext {plain.pooled.accuracy:.4f}; per hospital hefl "
        f"{[round(e.accuracy, 3) for _, e in final]} plaintext "
        f"{[round(e.accuracy, 3) for e in plain.per_client]}"
    )
    assert hefl.n_samples == plain.pooled.n_samples
    assert abs(hefl.accuracy - plain.pooled.accuracy) <= 0.01
    cache = runners[0].context.cache
    assert cache is not None
    assert cache.version == len(schedule)
    profile = crypto.get_profile("n4096-s40")
    drift = float(np.max(np.abs(cache.blocks - plain.global_blocks)))
    assert drift < 1e-4, drift  # CKKS noise (~1e-9 per addition) amplified by training
    assert profile.error_bound(len(schedule)) < 1e-6


def test_cli_enrolls_trains_to_the_end_and_shows_status(keyauth_url: str, tmp_path: Path) -> None:
    with _fl_server(keyauth_url, tmp_path) as server:
        create_job(
            server, admin_token(keyauth_url, ADMIN_KEY), heart_study("swiss", 3, local_steps=4)
        )
        state = tmp_path / "cli-state"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLCLIENT_")}
        env["FLCLIENT_STATE_DIR"] = str(state)
        cli = [sys.executable, "-m", "fl_client"]
        enrolled = subprocess.run(
            [*cli, "enroll", "--keyauth", keyauth_url, "--token", "-", "--json"],
            input=enrollment_token(keyauth_url, ADMIN_KEY, "switzerland") + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert enrolled.returncode == 0, enrolled.stderr
        assert json.loads(enrolled.stdout)["event"] == "enrolled"
        for path in state.iterdir():
            assert path.stat().st_mode & 0o077 == 0, path

        listed = subprocess.run(
            [*cli, "jobs", "--server", server, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert [j["name"] for j in json.loads(listed.stdout)] == ["swiss"]
        trained = subprocess.run(
            [
                *cli,
                "train",
                "--server",
                server,
                "--job",
                "swiss",
                "--data",
                "heart-disease",
                "--site",
                "switzerland",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert trained.returncode == 0, trained.stderr
        events = [json.loads(line) for line in trained.stdout.splitlines()]
        updates = [e for e in events if e["event"] == "update"]
        assert [u["version"] for u in updates] == [1, 2, 3]
        assert all(u["train_steps"] == 4 for u in updates)
        assert events[-1]["event"] == "stopped"
        assert events[-1]["reason"] == "job_done"
        assert events[-1]["job_stop_reason"] == "target_updates"
        for update in updates:
            assert update["blocks_sent"] == 1
            assert update["envelope_bytes"] > 0
            assert update["shared_params"] == 14

        shown = subprocess.run(
            [*cli, "status", "--server", server, "--job", "swiss"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split() == ["name", "swiss"]
        assert any(line.split() == ["state", "done"] for line in lines)
        assert any(line.split()[:2] == ["updates_applied", "3"] for line in lines)
        assert "clients:" in lines


def test_a_lost_answer_and_a_restart_never_apply_an_update_twice(
    keyauth_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _fl_server(keyauth_url, tmp_path) as server:
        create_job(
            server, admin_token(keyauth_url, ADMIN_KEY), heart_study("restart", 10, client_step=0.5)
        )
        settings = _settings(tmp_path, "hungary", keyauth_url, server, "restart")
        enroll(settings, enrollment_token(keyauth_url, ADMIN_KEY, "hungary-restart"))
        runner = Runner(settings, reporter=Reporter("quiet"))
        real_push = runner.context.server.push_update

        def push_then_lose_the_answer(
            envelope: bytes, metrics: str | None = None, **kwargs: Any
        ) -> Any:
            # with the default round requests the lost answer carried the next lease too
            real_push(envelope, metrics, **kwargs)
            raise KeyboardInterrupt  # the process dies before it reads the answer

        monkeypatch.setattr(runner.context.server, "push_update", push_then_lose_the_answer)
        with pytest.raises(KeyboardInterrupt):
            runner.run_round()
        pending = runner.context.state.load_pending()
        assert pending is not None
        # the journaled envelope is in its own file, removed once the update is acknowledged
        assert isinstance(pending.envelope, EnvelopeFile)
        journaled = b"".join(pending.envelope)
        assert runner.context.cache is not None
        pulled = runner.context.cache.blocks.copy()
        runner.close()

        # the resent update counts as the first of the two rounds asked for
        restarted = Runner(
            settings.model_copy(update={"max_rounds": 2}), reporter=Reporter("quiet")
        )
        try:
            summary = restarted.run()
            status = _wait_published(keyauth_url, server, "restart", 2)
            version, _ = restarted.evaluate_global()
        finally:
            restarted.close()

    first, second = summary.results
    assert first.update_id == str(pending.update_id)
    assert first.duplicate
    assert first.version == 1
    assert second.version == 2
    assert status["updates_applied"] == 2
    assert status["duplicates"] == 1
    # each update's metrics came with it, and the resent one's counted once
    assert [(m["version"], m["reports"]) for m in status["metrics"]] == [(0, 1), (1, 1)]
    assert version == 2
    # what went on the wire is η · (trained - pulled), recomputed from the pulled model
    profile = crypto.get_profile("n4096-s40")
    layout = restarted.context.layouts.get(profile.block_size)
    limits = crypto.EnvelopeLimits(1, profile.max_block_bytes, layout.fingerprint)
    update = crypto.update_from_bytes(journaled, limits)
    sent = restarted.context.keys.cipher(update.key_epoch).decrypt_block(update.blocks[0].data)
    replay = local_round(
        restarted.context.model,
        layout,
        pulled,
        {},
        restarted.context.data.train,
        restarted.context.data.test,
        restarted.context.train_config,
        round_seed(restarted.context.spec.model.seed, 0),
    )
    assert np.max(np.abs(sent - 0.5 * replay.delta[0])) <= profile.error_bound(1)
    assert np.max(np.abs(replay.delta)) > 1e-3
