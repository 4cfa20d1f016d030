"""The client loop against protocol-following fakes whose model is real ciphertext."""

from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import crypto
from fl_client import (
    ClientData,
    ClientSettings,
    LayoutConflictError,
    Runner,
    TooStaleError,
    TransportError,
    enroll,
    load_client_data,
)
from fl_client.events import Event, RoundResult
from fl_client.output import Reporter
from fl_client.state import EnvelopeFile, LocalState, PendingUpdate
from fl_client.training import local_round, round_seed
from fl_client.updates import compress_delta
from hefl_study import TASK_METRICS
from tests.fl_client.conftest import MakeRunner, Script, Sleeps
from tests.fl_client.fakes import FakeKeyauth, FakeServer, corrupt_update, digits_study, study
from tests.fl_client.memory_port import RecordingSink


def _cipher(keys: crypto.KeyMaterial) -> crypto.ClientCipher:
    return crypto.ClientCipher(keys.secret_context, crypto.get_profile(keys.profile_name))


def _uploaded(server: FakeServer, index: int = -1) -> crypto.EncryptedUpdate:
    assert server.layout is not None
    limits = crypto.EnvelopeLimits(
        server.layout.n_blocks, server.profile.max_block_bytes, server.layout.fingerprint
    )
    return crypto.update_from_bytes(server.uploads[index], limits)


def _replay_delta(runner: Runner, pulled: np.ndarray, round_: int) -> np.ndarray:
    """The delta the client must have computed, recomputed from scratch (training is
    deterministic given the pulled values and the round seed)."""
    from fl_client.models import model_from_spec

    model = model_from_spec(runner.context.spec)
    layout = runner.context.layouts.get(pulled.shape[1])
    shared = set(layout.names)
    personal = {k: v.numpy() for k, v in model.state_dict().items() if k not in shared}
    result = local_round(
        model,
        layout,
        pulled,
        personal,
        runner.context.data.train,
        runner.context.data.test,
        runner.context.train_config,
        round_seed(runner.context.spec.model.seed, round_),
    )
    return result.delta


def test_update_applied_by_the_server_is_pulled_plus_step_times_compressed_delta(
    make_runner: MakeRunner,
    fake_server: FakeServer,
    small_keys: crypto.KeyMaterial,
    digits_site: ClientData,
) -> None:
    # Prepare: an MLP of many blocks, top-k 25 %, client step 0.5
    runner = make_runner(
        data=digits_site,
        spec=digits_study(
            communication={"compression": "top-k", "block_fraction": 0.25},
            training={"client_step": 0.5},
        ),
    )
    profile = crypto.get_profile(small_keys.profile_name)
    cipher = _cipher(small_keys)

    # Execute: the first round also puts the layout and the initial model
    result = runner.run_round()

    # Assert
    assert result is not None
    assert result.version == 1
    assert result.base_version == 0
    layout = runner.context.layouts.get(profile.block_size)
    assert fake_server.layout == layout
    pulled = runner.context.cache.blocks if runner.context.cache else None
    assert pulled is not None
    initial = layout.flatten(runner.context.layouts.initial_state)
    assert np.max(np.abs(pulled - initial)) <= profile.error_bound(1)
    delta = _replay_delta(runner, pulled, round_=0)
    compressed = compress_delta(delta, None, runner.context.compression, 0)
    assert len(compressed.indices) == result.wire["blocks_sent"] == int(np.ceil(0.25 * 42))
    expected = pulled.copy()
    expected[compressed.indices] += 0.5 * compressed.blocks
    after = fake_server.decrypt(cipher)
    assert np.max(np.abs(after - expected)) <= profile.error_bound(1)
    # the blocks not sent did not move at all beyond the encryption noise
    untouched = np.setdiff1d(np.arange(layout.n_blocks), compressed.indices)
    assert np.max(np.abs(after[untouched] - pulled[untouched])) <= profile.error_bound(1)
    # the error-feedback residual kept is exactly what was not sent
    progress = runner.context.state.load_progress()
    assert progress.rounds == 1
    assert progress.residual is not None
    assert np.array_equal(progress.residual, compressed.residual)


def test_the_next_pull_asks_only_for_blocks_changed_since_the_cached_version(
    make_runner: MakeRunner,
    fake_server: FakeServer,
    small_keys: crypto.KeyMaterial,
    digits_site: ClientData,
) -> None:
    spec = digits_study(communication={"compression": "top-k", "block_fraction": 0.1})
    runner = make_runner(data=digits_site, spec=spec)
    first = runner.run_round()
    assert first is not None

    second = runner.run_round()

    assert second is not None
    assert fake_server.pulls[0].url.params.get("since") is None
    assert fake_server.pulls[1].url.params.get("since") == "0"
    assert second.pull_blocks == first.wire["blocks_sent"] < 42
    assert runner.context.cache is not None
    assert runner.context.cache.version == 1
    # the cache patched with the changed blocks equals the whole model, decrypted
    profile = crypto.get_profile(small_keys.profile_name)
    full = fake_server.decrypt(_cipher(small_keys))
    full_before_second = full  # the second update is applied after the pull
    assert full_before_second.shape == runner.context.cache.blocks.shape
    fake_server_version_1 = runner.context.cache.blocks
    upload_2 = _uploaded(fake_server)
    restored = full.copy()
    for block in upload_2.blocks:
        restored[block.index] -= _cipher(small_keys).decrypt_block(block.data)
    assert np.max(np.abs(restored - fake_server_version_1)) <= profile.error_bound(3)


def test_personal_layers_never_leave_and_each_client_keeps_its_own(
    make_runner: MakeRunner,
    fake_server: FakeServer,
    small_keys: crypto.KeyMaterial,
    digits_site: ClientData,
) -> None:
    # Prepare: two clients whose heads are personal
    spec = digits_study(communication={"personal": ["head.*"]})
    a = make_runner("a", data=digits_site, spec=spec)
    b = make_runner("b", data=load_client_data("digits", "1", n_sites=3))
    whole = crypto.build_layout(
        a.context.layouts.initial_state, crypto.get_profile("test-n2048").block_size
    )

    # Execute
    for runner in (a, b, a):
        assert runner.run_round() is not None

    # Assert: the job's layout and every upload hold only the shared tensors
    assert fake_server.layout is not None
    layout = fake_server.layout
    assert not any(name.startswith("head.") for name in layout.names)
    for raw in fake_server.layouts_put:
        assert b"head." not in raw.replace(b'"head.*"', b"")
    shared_params = sum(int(np.prod(t.shape)) for t in layout.tensors)
    assert shared_params == whole.total_params - (256 * 10 + 10)
    for i in range(len(fake_server.uploads)):
        update = _uploaded(fake_server, i)
        assert update.fingerprint == layout.fingerprint
        assert max(b.index for b in update.blocks) < layout.n_blocks
        assert len(update.blocks) == layout.n_blocks
    # each client trained and kept its own head; the heads differ between clients
    head_a = a.context.state.load_progress().personal["head.weight"]
    head_b = b.context.state.load_progress().personal["head.weight"]
    assert not np.array_equal(head_a, a.context.layouts.initial_state["head.weight"].numpy())
    assert not np.array_equal(head_a, head_b)
    assert np.array_equal(a.context.model.state_dict()["head.weight"].numpy(), head_a)


def test_a_lost_acknowledgement_is_resent_with_the_same_id_and_applied_once(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    runner = make_runner()
    fake_server.drop_answer_after_apply = 1

    result = runner.run_round()

    assert result is not None
    assert result.duplicate
    assert fake_server.applied == 1
    assert len(fake_server.uploads) == 2
    assert fake_server.uploads[0] == fake_server.uploads[1]
    assert runner.context.state.load_pending() is None


def test_every_update_declares_the_training_rows_behind_it_and_a_resend_the_same(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    runner = make_runner()
    fake_server.drop_answer_after_apply = 1

    runner.run_round()
    runner.run_round()

    rows = len(runner.context.data.train)
    assert fake_server.samples_declared == [rows, rows, rows]  # the second is the resend


def test_a_restart_resends_the_journaled_update_and_never_applies_it_twice(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare: the server applies the update, then the connection dies on every attempt
    runner = make_runner(max_attempts=1)
    fake_server.drop_answer_after_apply = 1
    with pytest.raises(TransportError):
        runner.run_round()
    pending = runner.context.state.load_pending()
    assert pending is not None
    assert fake_server.applied == 1
    assert runner.context.state.load_progress().rounds == 0
    runner.close()

    # Execute: a new process on the same state directory
    restarted = make_runner(max_rounds=1)
    summary = restarted.run()

    # Assert: the resend was acknowledged as a duplicate; only then was progress committed
    assert summary.results[0].duplicate
    assert summary.results[0].update_id == str(pending.update_id)
    assert fake_server.applied == 1
    progress = restarted.context.state.load_progress()
    assert progress.rounds == 1
    assert progress.last_update_id == pending.update_id
    assert restarted.context.state.load_pending() is None


def test_a_crash_before_sending_resends_on_restart(
    make_runner: MakeRunner, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner()

    def crash(envelope: bytes, metrics: str | None = None, **_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.context.server, "push_update", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.run_round()
    pending = runner.context.state.load_pending()
    assert pending is not None
    assert fake_server.applied == 0
    assert isinstance(pending.envelope, EnvelopeFile)
    journaled = b"".join(pending.envelope)  # its file is dropped once it is acknowledged

    restarted = make_runner(max_rounds=1)
    summary = restarted.run()

    assert fake_server.applied == 1
    assert summary.results[0].update_id == str(pending.update_id)
    assert not summary.results[0].duplicate
    assert fake_server.uploads == [journaled]


def test_too_stale_rejection_commits_nothing_and_the_client_retrains(
    make_runner: MakeRunner, fake_server: FakeServer, cancer_sites: list[ClientData]
) -> None:
    spec = study(communication={"compression": "top-k", "block_fraction": 0.5})
    runner = make_runner(spec=spec, max_rounds=1)
    fake_server.too_stale_next = 1
    with pytest.raises(TooStaleError):
        runner.run_round()
    assert runner.context.state.load_pending() is None
    assert runner.context.state.load_progress().rounds == 0
    assert fake_server.applied == 0

    summary = runner.run()

    assert summary.rounds == 1
    assert fake_server.applied == 1
    # the accepted update is the same training as the rejected one (same round seed)
    assert fake_server.uploads[0] != fake_server.uploads[1]
    assert len(_uploaded(fake_server, 0).blocks) == len(_uploaded(fake_server, 1).blocks)


def test_busy_slots_and_server_errors_are_waited_out_as_the_server_asks(
    make_runner: MakeRunner, fake_server: FakeServer, sleeps: Sleeps
) -> None:
    runner = make_runner()
    fake_server.slots_busy = 2
    fake_server.fail_with_503 = 0

    assert runner.run_round() is not None

    assert sleeps == [7.0, 7.0]


def test_an_expired_token_is_replaced_once_and_the_request_repeated(
    make_runner: MakeRunner, fake_server: FakeServer, fake_keyauth: FakeKeyauth
) -> None:
    runner = make_runner()
    assert runner.run_round() is not None
    issued = fake_keyauth.tokens_issued
    fake_server.reject_token_once = True

    assert runner.run_round() is not None

    assert fake_keyauth.tokens_issued == issued + 1


def test_the_run_stops_when_the_job_is_done_and_reports_final_metrics(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    fake_server.target_updates = 3
    runner = make_runner()

    summary = runner.run()

    assert summary.stop_reason == "job_done"
    assert summary.rounds == 3
    assert summary.final_version == 3
    assert summary.final_eval is not None
    versions = [m["version"] for m in fake_server.metrics]
    assert versions == [0, 1, 2, 3]  # after each round, and the final evaluation
    for report in fake_server.metrics:
        # the binary task's metrics, on the held-out rows
        assert set(report["metrics"]) == {"n_samples", *TASK_METRICS["binary"]}
        assert 0 <= report["metrics"]["auroc"] <= 1
        assert report["metrics"]["n_samples"] == len(runner.context.data.test)
    assert summary.final_eval.to_metrics() == fake_server.metrics[-1]["metrics"]


def test_a_client_with_another_layout_is_refused_with_a_clear_message(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare: the job's layout keeps the head's bias personal; this client's spec does not
    runner = make_runner("a")
    fake_server.layout = crypto.build_layout(
        runner.context.layouts.initial_state,
        fake_server.profile.block_size,
        personal=["head.bias"],
    )

    with pytest.raises(LayoutConflictError, match="personal"):
        runner.run_round()


def test_tokens_and_secrets_never_reach_logs_or_output(
    make_runner: MakeRunner,
    fake_keyauth: FakeKeyauth,
    fake_server: FakeServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    out, err = io.StringIO(), io.StringIO()
    fake_server.target_updates = 2
    fake_server.drop_answer_after_apply = 1
    runner = make_runner(reporter=Reporter("json", out=out, err=err))

    runner.run()

    text = (
        caplog.text + out.getvalue() + err.getvalue() + repr(runner.session.connection.credential)
    )
    secrets = [*fake_keyauth.clients.values(), *fake_keyauth.valid_tokens, "enroll-"]
    assert runner.session.connection.credential.client_secret in fake_keyauth.clients.values()
    for secret in secrets:
        assert secret not in text
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events.count("update") == 2
    assert events[-1] == "stopped"
    assert "retry" in caplog.text  # the dropped answer was logged, without any token


def test_update_ids_are_fresh_uuid4_per_round(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    runner = make_runner()
    ids = [runner.run_round() for _ in range(3)]

    parsed = [uuid.UUID(r.update_id) for r in ids if r is not None]
    assert len(set(parsed)) == 3
    assert all(u.version == 4 for u in parsed)


def test_a_stop_request_ends_the_run_after_the_current_round(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    class SignalMidRound(Reporter):
        def emit(self, event: Event) -> None:
            super().emit(event)
            if isinstance(event, RoundResult):
                runner.request_stop()  # what the SIGTERM handler does mid-round

    runner = make_runner(reporter=SignalMidRound("quiet"))

    summary = runner.run()

    assert summary.stop_reason == "stopped"
    assert summary.rounds == 1
    assert fake_server.applied == 1


def test_a_lost_enrollment_answer_is_fetched_again_and_saved(
    tmp_path: Path, fake_keyauth: FakeKeyauth
) -> None:
    # Prepare: keyauth enrolls the client, then the connection drops before the answer.
    lost: list[int] = []

    def lossy(request: httpx.Request) -> httpx.Response:
        answer = fake_keyauth(request)
        if request.url.path == "/v1/enroll" and not lost:
            lost.append(answer.status_code)
            raise httpx.ReadError("connection reset")
        return answer

    settings = ClientSettings(state_dir=tmp_path / "state", output="quiet", backoff_base=0.0)

    # Execute
    credential = enroll(
        settings, fake_keyauth.issue_enrollment_token(), transport=httpx.MockTransport(lossy)
    )

    # Assert: the retry got the same client, whose secret is now stored and confirmed.
    assert lost == [201]
    assert fake_keyauth.clients == {credential.client_id: credential.client_secret}
    assert LocalState(settings.state_dir).load_credential() == credential
    assert fake_keyauth.unconfirmed == {}


def test_train_uses_the_enrolling_keyauth_unless_told_otherwise(
    make_runner: MakeRunner, fake_keyauth: FakeKeyauth
) -> None:
    first = make_runner("a")
    assert first.session.connection.keyauth.base_url == "http://127.0.0.1:8700"
    moved = make_runner("a", keyauth_url="https://keyauth.example.org")
    assert moved.session.connection.keyauth.base_url == "https://keyauth.example.org"


def test_the_final_evaluation_waits_for_the_last_applied_version(
    make_runner: MakeRunner, fake_server: FakeServer, sleeps: Sleeps
) -> None:
    fake_server.target_updates = 2
    runner = make_runner()
    assert runner.run_round() is not None
    assert runner.run_round() is not None
    fake_server.lagging_pulls = 2  # the server has applied version 2 but still serves 1

    version, evaluation = runner.evaluate_global()

    assert version == 2
    assert sleeps == [0.2, 0.2]
    assert evaluation.n_samples == len(runner.context.data.test)


def test_a_new_key_epoch_is_fetched_once_and_used(
    make_runner: MakeRunner, fake_server: FakeServer, fake_keyauth: FakeKeyauth
) -> None:
    runner = make_runner()
    assert runner.session.connection.credential.key_epoch == 1
    # keyauth rotated and the job was set up under epoch 2
    fake_keyauth.key_epoch = fake_server.key_epoch = 2

    result = runner.run_round()

    assert result is not None
    assert runner.session.connection.state.load_secret_context(2) is not None
    fetched = [r for r in fake_keyauth.requests if r.url.path == "/v1/keys/secret-context"]
    assert [r.url.params.get("epoch") for r in fetched] == ["1", "2"]
    assert _uploaded(fake_server).key_epoch == 2


def test_step_delay_sleeps_after_every_local_step(make_runner: MakeRunner, sleeps: Sleeps) -> None:
    runner = make_runner(step_delay=0.25, spec=study(training={"local_steps": 3}))
    result = runner.run_round()
    assert result is not None
    assert result.train_steps == 3
    assert sleeps.count(0.25) == 3


def test_an_update_refused_while_paused_stays_journaled_and_is_sent_after_the_resume(
    make_runner: MakeRunner, fake_server: FakeServer, sleeps: Sleeps
) -> None:
    # Prepare: the job is paused just as the client pushes its first update; the
    # administrator resumes it after the client has looked three times
    sink = RecordingSink()
    runner = make_runner(reporter=sink, max_rounds=1)
    push = fake_server.push_update
    looks = {"n": 0}

    def pause_then_push(envelope: bytes, metrics: str | None = None) -> dict[str, Any]:
        if fake_server.applied == 0 and fake_server.paused_from is None and looks["n"] == 0:
            fake_server.pause()
        return push(envelope, metrics)

    job = fake_server.job

    def look() -> dict[str, Any]:
        if fake_server.state == "paused":
            looks["n"] += 1
            if looks["n"] == 3:
                fake_server.resume()
        return job()

    fake_server.push_update = pause_then_push  # type: ignore[method-assign]
    fake_server.job = look  # type: ignore[method-assign]

    # Execute
    summary = runner.run()

    # Assert: one update, the same bytes refused then applied; "paused" said once
    assert summary.rounds == 1
    assert fake_server.applied == 1
    assert len(fake_server.uploads) == 2
    assert fake_server.uploads[0] == fake_server.uploads[1]
    assert sink.names.count("paused") == sink.names.count("resumed") == 1
    assert sink.names.index("paused") < sink.names.index("update")
    assert runner.context.state.load_pending() is None
    assert len([s for s in sleeps if s > 0]) >= 2  # it waited with backoff


def test_a_client_waiting_for_a_paused_job_still_stops_at_its_max_duration(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare: a job paused for good; a client that takes part for 60 s at most
    sink = RecordingSink()
    runner = make_runner(reporter=sink, max_duration=60)
    ticks = iter(range(0, 10_000, 7))
    runner.context.clock = lambda: float(next(ticks))  # 7 s per look at the clock
    fake_server.pause()

    # Execute
    summary = runner.run()

    # Assert
    assert summary.stop_reason == "max_duration"
    assert sink.names[-2:] == ["paused", "stopped"]
    assert fake_server.writes() == []


def test_over_http_a_corrupted_model_is_reported_probed_and_repaired_then_training_goes_on(
    make_runner: MakeRunner, fake_server: FakeServer, small_keys: crypto.KeyMaterial
) -> None:
    # Prepare: two clean rounds, then an update under another key makes version 3
    out = io.StringIO()
    runner = make_runner(max_rounds=1, reporter=Reporter("human", out=out, err=io.StringIO()))
    runner.run_round()
    runner.run_round()
    corrupt_update(fake_server, _cipher(small_keys), "another key")
    runner.context.sleep = Script(
        lambda: fake_server.locate(3), lambda: fake_server.repair(3, quarantine=False)
    )

    # Execute: one more acknowledged round to go
    summary = runner.run()

    # Assert: reported, probed over the job's paths, repaired, trained on version 4
    paths = [f"{r.method} {r.url.path}?{r.url.query.decode()}" for r in fake_server.requests]
    assert f"GET /v1/jobs/{fake_server.name}/model?version=3" in paths
    assert [(r["version"], r["ok"]) for r in fake_server.integrity_reports] == [
        (3, False),
        (3, False),
    ]
    assert summary.rounds == 1
    assert summary.results[0].base_version == 4
    lines = out.getvalue().splitlines()
    [failed] = [line for line in lines if line.startswith("[integrity]")]
    assert "model version 3 of job cancer failed the range check in block 0" in failed
    assert any(line.startswith("[probe] version=3") for line in lines)
    assert any(line.startswith("[repaired]") for line in lines)


def test_a_journal_entry_a_power_cut_brings_back_after_its_ack_is_dropped_unsent(
    make_runner: MakeRunner, fake_server: FakeServer
) -> None:
    # Prepare: a round acknowledged and committed; its journal entry's removal is not
    # fsync'd, so a power cut may bring the entry back
    runner = make_runner()
    state = runner.context.state
    journaled: list[PendingUpdate] = []
    write_pending = state.write_pending

    def keep(pending: PendingUpdate) -> None:
        journaled.append(pending)
        write_pending(pending)

    state.write_pending = keep  # type: ignore[method-assign]
    runner.run_round()
    runner.close()
    state.write_pending = write_pending  # type: ignore[method-assign]
    write_pending(journaled[0])

    # Execute: a new process on the same state directory
    restarted = make_runner(max_rounds=1)
    summary = restarted.run()

    # Assert: the entry was dropped, not resent; the next round is a new update
    assert fake_server.applied == 2
    assert not summary.results[0].duplicate
    assert summary.results[0].update_id != str(journaled[0].update_id)
    assert restarted.context.state.load_progress().rounds == 2
