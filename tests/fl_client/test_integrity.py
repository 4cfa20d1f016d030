"""A hospital meets a corrupted model: it checks, reports, trains nothing, answers probes,
and trains on once the job is repaired; a quarantine and replaced keys stop it clearly."""

from __future__ import annotations

import pytest

import crypto
from fl_client import ClientSettings, IntegrityError
from fl_client.errors import ClientQuarantinedError, KeyIdMismatchError, ProbeNotOfferedError
from fl_client.events import (
    ClientWarning,
    IntegrityFailed,
    IntegrityRestored,
    ProbeAnswered,
    Stopped,
)
from fl_client.output import Reporter, render_jobs
from fl_client.rounds.context import RoundContext
from fl_client.rounds.loop import load_global, run, run_round
from fl_client.rounds.port import Probe
from fl_client.rounds.repair import answer_probe, wait_for_repair
from fl_client.state import LocalState
from tests.fl_client.conftest import MakeContext, Script
from tests.fl_client.fakes import FakeServer, corrupt_update, forge_scale
from tests.fl_client.memory_port import MemoryPort


def _trained(make_context: MakeContext, rounds: int) -> RoundContext:
    """A hospital that trained ``rounds`` rounds on a clean job."""
    ctx, _ = make_context()
    for _ in range(rounds):
        assert run_round(ctx) is not None
    return ctx


@pytest.mark.parametrize(
    ("how", "check"),
    [
        ("flipped bit", "range"),
        ("another key", "range"),
        ("NaN", "finite"),
        ("undecryptable", "finite"),
    ],
)
def test_a_corrupted_model_is_reported_at_its_first_pull_and_nothing_is_trained_on_it(
    make_context: MakeContext,
    port: MemoryPort,
    server: FakeServer,
    small_client: crypto.ClientCipher,
    small_keys: crypto.KeyMaterial,
    how: str,
    check: str,
) -> None:
    # Prepare: two clean versions, then the corruption
    ctx = _trained(make_context, 2)
    if how in ("NaN", "undecryptable"):
        forge_scale(server, small_keys, 1e-300 if how == "NaN" else float("nan"))
    else:
        corrupt_update(server, small_client, how)
    bad_version = server.version
    uploads, metrics, calls = len(server.uploads), len(server.metrics), len(port.calls)
    cached = ctx.state.load_model_cache()
    assert cached is not None
    sink = ctx.events

    # Execute
    with pytest.raises(IntegrityError) as caught:
        run_round(ctx)

    # Assert: detected at the very version, reported once, trained and pushed nothing
    assert (caught.value.version, caught.value.check, caught.value.blocks) == (
        bad_version,
        check,
        (0,),
    )
    [report] = server.integrity_reports
    assert report["version"] == bad_version
    assert (report["ok"], report["check"], report["blocks"], report["update_id"]) == (
        False,
        check,
        [0],
        None,
    )
    # which check and where, never a decrypted value (docs/design.md)
    assert set(report) == {"version", "ok", "check", "blocks", "update_id"}
    assert len(server.uploads) == uploads
    assert len(server.metrics) == metrics
    assert port.calls[calls:] == ["lease_model", "post_integrity", "release_slot"]
    [failed] = [e for e in sink.events if isinstance(e, IntegrityFailed)]  # type: ignore[attr-defined]
    assert (failed.version, failed.check, failed.blocks) == (bad_version, check, [0])
    # the bad model is kept nowhere: the next pull takes the whole model
    assert ctx.cache is None
    stored = ctx.state.load_model_cache()
    assert stored is not None
    assert stored.version == cached.version < bad_version


def test_a_hospital_answers_the_probes_then_trains_on_the_repaired_model(
    make_context: MakeContext,
    port: MemoryPort,
    server: FakeServer,
    small_client: crypto.ClientCipher,
) -> None:
    # Prepare: versions 1 and 2 clean, version 3 made by a flipped bit; the server will
    # probe version 2 (good), then version 3 (bad), then remove the update of version 3
    ctx = _trained(make_context, 2)
    corrupt_update(server, small_client, "flipped bit")
    ctx.settings = ClientSettings(**{**ctx.settings.model_dump(), "max_rounds": 1})
    ctx.sleep = Script(lambda: server.locate(2), lambda: server.locate(3), lambda: server.repair(3))
    clean = server.published[2]

    # Execute
    summary = run(ctx)

    # Assert: the failure, then each probe answered with its version
    reports = [(r["version"], r["ok"], r["check"]) for r in server.integrity_reports]
    assert reports == [(3, False, "range"), (2, True, None), (3, False, "range")]
    probes = [e for e in ctx.events.events if isinstance(e, ProbeAnswered)]  # type: ignore[attr-defined]
    assert [(p.version, p.ok) for p in probes] == [(2, True), (3, False)]
    restored = [e for e in ctx.events.events if isinstance(e, IntegrityRestored)]  # type: ignore[attr-defined]
    assert [(r.failed_version, r.version) for r in restored] == [(3, 4)]
    # the repaired version 4 is version 2 bit for bit; training went on from it
    limits = crypto.EnvelopeLimits(1, server.profile.max_block_bytes)
    assert (
        crypto.model_from_bytes(server.published[4], limits).blocks
        == crypto.model_from_bytes(clean, limits).blocks
    )
    assert summary.rounds == 1
    assert summary.results[0].base_version == 4
    bases = [crypto.update_from_bytes(u, server._limits()).base_version for u in server.uploads]
    assert 3 not in bases
    assert [m["version"] for m in server.metrics] == [0, 1, 4]


def test_a_probe_of_this_hospitals_own_update_is_answered_with_its_id(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: the hospital's update made version 2; the server probes version 1 plus it
    ctx = _trained(make_context, 2)
    own = server.made[2][0]
    server.locate(1, own, ctx.client_id)
    probe = port.job().integrity.probe
    assert probe == Probe(1, own, ctx.client_id)

    # Execute
    answered = answer_probe(ctx, port.job(), probe)

    # Assert
    assert answered
    [report] = server.integrity_reports
    assert (report["version"], report["ok"], report["update_id"]) == (1, True, own)


def test_another_hospitals_update_probe_is_left_to_it(
    make_context: MakeContext,
    port: MemoryPort,
    server: FakeServer,
    small_client: crypto.ClientCipher,
) -> None:
    # Prepare: a bad version 3; the server probes another client's update, then repairs
    ctx = _trained(make_context, 2)
    bad = corrupt_update(server, small_client, "another key")
    with pytest.raises(IntegrityError) as caught:
        run_round(ctx)
    ctx.sleep = Script(lambda: server.locate(2, bad, "client-z"), lambda: server.repair(3))

    # Execute
    job = wait_for_repair(ctx, caught.value)

    # Assert: nothing fetched nor reported for that probe; healthy again at version 4
    assert "get_probe_model" not in port.calls
    assert len(server.integrity_reports) == 1
    assert (job.integrity.state, job.version) == ("healthy", 4)


def test_a_probe_the_server_withdrew_is_skipped_without_a_report(
    make_context: MakeContext,
    port: MemoryPort,
    server: FakeServer,
    small_client: crypto.ClientCipher,
) -> None:
    # Prepare
    ctx = _trained(make_context, 1)
    corrupt_update(server, small_client, "flipped bit")
    with pytest.raises(IntegrityError) as caught:
        run_round(ctx)
    port.faults["get_probe_model"] = [
        ProbeNotOfferedError("moved on", status=409, code="probe_not_offered")
    ]
    ctx.sleep = Script(lambda: server.locate(1), lambda: server.repair(2))

    # Execute
    job = wait_for_repair(ctx, caught.value)

    # Assert
    assert port.calls.count("get_probe_model") == 1
    assert len(server.integrity_reports) == 1
    assert job.version == 3


def test_waiting_for_a_repair_ends_when_the_hospital_is_asked_to_stop(
    make_context: MakeContext, server: FakeServer, small_client: crypto.ClientCipher
) -> None:
    ctx = _trained(make_context, 1)
    corrupt_update(server, small_client, "flipped bit")
    with pytest.raises(IntegrityError) as caught:
        run_round(ctx)
    ctx.sleep = Script(lambda: setattr(ctx, "stop_requested", lambda: True))

    job = wait_for_repair(ctx, caught.value)

    assert job.integrity.state == "healthy"
    assert job.version == 2


def test_a_search_that_asks_nothing_is_said_once_while_the_hospital_waits(
    make_context: MakeContext, server: FakeServer, small_client: crypto.ClientCipher
) -> None:
    # Prepare: the server is locating with no probe (its search needs the administrator),
    # three looks later the administrator repairs
    ctx = _trained(make_context, 1)
    corrupt_update(server, small_client, "flipped bit")
    with pytest.raises(IntegrityError) as caught:
        run_round(ctx)

    def stuck() -> None:
        server.integrity_state, server.probe = "locating", None

    ctx.sleep = Script(stuck, lambda: None, lambda: None, lambda: server.repair(2))

    # Execute
    job = wait_for_repair(ctx, caught.value)

    # Assert: one warning naming the job and what to ask for, then the repaired job
    warnings = [e for e in ctx.events.events if isinstance(e, ClientWarning)]  # type: ignore[attr-defined]
    assert len(warnings) == 1
    assert "asks this hospital nothing" in warnings[0].message
    assert "hefl-admin job show" in warnings[0].message
    assert (job.integrity.state, job.version) == ("healthy", 3)


def test_evaluate_and_export_refuse_a_model_that_fails_a_check(
    make_context: MakeContext, server: FakeServer, small_client: crypto.ClientCipher
) -> None:
    # Prepare
    ctx = _trained(make_context, 1)
    corrupt_update(server, small_client, "flipped bit")
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}

    # Execute
    with pytest.raises(IntegrityError, match=r"version 2 failed its integrity check \(range"):
        load_global(ctx)

    # Assert: reported, and the model was not loaded
    assert [r["version"] for r in server.integrity_reports] == [2]
    for name, value in ctx.model.state_dict().items():
        assert value.equal(before[name])


def test_a_quarantined_hospital_stops_with_a_clear_message_and_drops_its_update(
    make_context: MakeContext, server: FakeServer
) -> None:
    # Prepare
    ctx = _trained(make_context, 1)
    server.quarantined = True

    # Execute
    with pytest.raises(ClientQuarantinedError) as caught:
        run(ctx)

    # Assert
    message = str(caught.value)
    assert "quarantined on job 'cancer'" in message
    assert "until an administrator releases it" in message
    assert ctx.state.load_pending() is None
    stopped = [e for e in ctx.events.events if isinstance(e, Stopped)]  # type: ignore[attr-defined]
    assert [s.reason for s in stopped] == ["quarantined"]


def test_a_job_under_replaced_keys_trains_nothing_and_says_what_to_do(
    make_context: MakeContext, port: MemoryPort, server: FakeServer, fetched: list[int]
) -> None:
    # Prepare: the job was created under other keys than keyauth serves now
    server.key_id = "ab" * 32
    ctx, _ = make_context()

    # Execute
    with pytest.raises(KeyIdMismatchError) as caught:
        run_round(ctx)

    # Assert: asked keyauth once more, then refused before anything was sent
    message = str(caught.value)
    assert "keyauth's keys were replaced" in message
    assert "Ask the operator" in message
    assert "cannot continue under other keys" in message
    assert fetched == [1, 1]
    assert port.calls == ["job"]


def test_a_context_keyauth_replaced_before_the_job_was_created_is_fetched_again(
    make_context: MakeContext,
    port: MemoryPort,
    server: FakeServer,
    small_keys: crypto.KeyMaterial,
    fetched: list[int],
) -> None:
    # Prepare: this hospital holds the old context of epoch 1; keyauth's keys (and the
    # job's) are new ones
    new = crypto.generate_key_material(crypto.get_profile(small_keys.profile_name))
    fresh = FakeServer(keys=new, keyauth=server.keyauth, spec=server.spec)
    server.keyauth.keys = new
    port.server = fresh
    ctx, _ = make_context()
    LocalState(ctx.settings.state_dir).save_secret_context(
        1, small_keys.profile_name, small_keys.secret_context
    )

    # Execute
    result = run_round(ctx)

    # Assert: trained under the job's keys, which this hospital now holds
    assert result is not None
    assert fetched == [1]
    stored = LocalState(ctx.settings.state_dir).load_secret_context(1)
    assert stored == (new.profile_name, new.secret_context)


def test_the_failure_is_one_plain_line_of_progress_output() -> None:
    import io

    out = io.StringIO()
    event = IntegrityFailed(job="cancer", version=12, check="canary", blocks=[0, 3], max_abs=0.9)

    Reporter("human", out=out).emit(event)

    assert out.getvalue() == (
        "[integrity] model version 12 of job cancer failed the canary check in blocks 0, 3; "
        "largest |value| 0.9: reported to the server; nothing is trained on it\n"
    )


def test_the_jobs_list_says_when_the_server_locates_or_repairs_a_bad_update(
    port: MemoryPort, server: FakeServer
) -> None:
    server.state = "training"
    server.locate(3)

    table = render_jobs([port.job()])

    assert "training, locating a bad update" in table.splitlines()[2]
