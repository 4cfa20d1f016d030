"""The rounds against an in-memory server port: no HTTP, no tokens, real ciphertexts."""

from __future__ import annotations

import ast
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

import crypto
import fl_client
from fl_client import (
    AccessTokenError,
    LayoutConflictError,
    RateLimitedError,
    ServerError,
    TransportError,
    VersionAheadError,
)
from fl_client.events import ClientWarning, InitialModelPut, RoundResult
from fl_client.rounds.job import check_layout, layout_mismatch, start_job
from fl_client.rounds.keys import LayoutCache
from fl_client.rounds.loop import run, run_round
from fl_client.rounds.pull import pull_model
from tests.fl_client.conftest import MakeContext, Sleeps
from tests.fl_client.fakes import FakeServer
from tests.fl_client.memory_port import MemoryPort


def test_the_first_client_starts_the_job_then_trains_and_pushes_one_update(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: a job waiting for its initial model
    ctx, sink = make_context()

    # Execute
    result = run_round(ctx)

    # Assert: the round's calls, in the protocol's order, and what it reported
    assert port.calls == [
        "job",
        "put_layout",
        "put_initial_model",
        "job",
        "lease_model",
        "push_update",
    ]
    assert sink.names == ["key_epoch", "initial_model", "update"]
    assert result == sink.events[-1]
    assert result is not None
    assert (result.base_version, result.version, result.round) == (0, 1, 1)
    assert server.applied == 1
    assert [m["version"] for m in server.metrics] == [0]
    assert result.eval_before is not None
    assert server.metrics[0]["metrics"] == result.eval_before.metrics
    assert ctx.state.load_progress().rounds == 1
    assert ctx.state.load_pending() is None


def test_a_client_that_loses_the_initial_model_race_does_not_claim_it(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: two clients see the same waiting job
    a, a_sink = make_context("a")
    b, b_sink = make_context("b")
    job = port.job()

    # Execute
    started = [start_job(a, job), start_job(b, job)]

    # Assert: both put the (equal) layout; only the first one's model counts
    assert started == [True, False]
    assert len(server.layouts_put) == 2
    assert any(isinstance(e, InitialModelPut) for e in a_sink.events)
    assert not any(isinstance(e, InitialModelPut) for e in b_sink.events)


def test_the_layout_mismatch_message_names_the_whole_difference() -> None:
    # Prepare: the job shares both tensors; this client keeps "b" personal
    tensors = {"w": np.zeros((2, 3)), "b": np.zeros(2)}
    job = crypto.build_layout(tensors, 16)
    mine = crypto.build_layout(tensors, 16, personal=["b"])

    # Execute
    message = layout_mismatch(mine, job)

    # Assert: neither side is cut short
    assert message.endswith("(job: 2 tensors, personal []; this client: 1, personal ['b'])")
    assert "communication.personal" in layout_mismatch(mine, None)


def test_a_client_with_another_layout_is_refused_with_both_layouts_described(
    make_context: MakeContext, port: MemoryPort
) -> None:
    # Prepare: client a started the job; client b's spec keeps the head's bias personal
    # (as a client of another hefl version might build it)
    a, _ = make_context("a")
    assert run_round(a) is not None
    b, _ = make_context("b")
    b.layouts = LayoutCache(b.layouts.initial_state, ["head.bias"])
    mine = b.layouts.get(crypto.get_profile(port.job().profile).block_size)

    # Execute
    with pytest.raises(LayoutConflictError) as info:
        check_layout(b, port.job())

    # Assert
    assert info.value.code == "layout_mismatch"
    assert info.value.detail.endswith(
        f"this client: {len(mine.tensors)}, personal {list(mine.personal)})"
    )


def test_an_unchanged_model_is_not_downloaded_again(
    make_context: MakeContext, port: MemoryPort
) -> None:
    # Prepare: the client holds the current model
    ctx, _ = make_context()
    assert run_round(ctx) is not None
    job = port.job()
    layout = check_layout(ctx, job)
    current = pull_model(ctx, layout, job)

    # Execute
    again = pull_model(ctx, layout, job)

    # Assert
    assert (again.nbytes, again.nblocks) == (0, 0)
    assert again.cache is current.cache
    assert port.since[-2:] == [0, 1]


def test_a_refused_incremental_pull_falls_back_to_the_whole_model(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: a cached model, and a server that refuses its version (reset?)
    ctx, _ = make_context()
    assert run_round(ctx) is not None
    port.faults["get_model"] = [VersionAheadError("ahead", status=409, code="version_ahead")]
    job = port.job()

    # Execute
    pulled = pull_model(ctx, check_layout(ctx, job), job)

    # Assert
    assert port.since[-2:] == [0, None]
    assert pulled.cache.version == server.version == 1
    assert pulled.nblocks == pulled.cache.blocks.shape[0]


def test_a_model_under_a_new_key_epoch_is_pulled_whole_in_a_second_attempt(
    make_context: MakeContext, port: MemoryPort, server: FakeServer, fetched: list[int]
) -> None:
    # Prepare: the client cached version 0 under epoch 1; the server's model moved to epoch 2
    ctx, _ = make_context()
    assert run_round(ctx) is not None
    assert ctx.cache is not None
    assert ctx.cache.key_epoch == 1
    job = port.job()
    server.key_epoch = 2

    # Execute: the job as the client saw it still says epoch 1
    pulled = pull_model(ctx, check_layout(ctx, job), job)

    # Assert: the incremental answer was dropped for one whole pull, decrypted under epoch 2
    assert port.since[-2:] == [0, None]
    assert pulled.cache.key_epoch == 2
    assert pulled.cache.version == 1
    assert fetched == [1, 2]


def test_a_busy_server_is_waited_out_as_it_asks_or_given_up_after_slot_wait_max(
    make_context: MakeContext, server: FakeServer, sleeps: Sleeps
) -> None:
    # Prepare
    ctx, sink = make_context()
    server.slots_busy = 2

    # Execute
    result = run_round(ctx)

    # Assert
    assert result is not None
    assert sleeps == [7.0, 7.0]
    assert sink.names.count("waiting_for_slot") == 2

    # ...and a client told to wait at most 30 s gives up once that has passed
    impatient, _ = make_context("impatient", slot_wait_max=30)
    impatient.clock = itertools.count(0.0, 60.0).__next__  # a minute per look at the clock
    server.slots_busy = 1
    with pytest.raises(RateLimitedError):
        run_round(impatient)


def test_metrics_that_cannot_be_reported_are_a_warning_unless_the_login_was_refused(
    make_context: MakeContext, port: MemoryPort
) -> None:
    # Prepare: separate requests (the metrics are a request of their own)
    ctx, sink = make_context(round_requests="separate")
    port.faults["post_metrics"] = [ServerError("down", status=503, code="unavailable")]

    # Execute
    result = run_round(ctx)

    # Assert
    assert result is not None
    warnings = [e for e in sink.events if isinstance(e, ClientWarning)]
    assert [w.message for w in warnings] == [
        "metrics for version 0 not reported: down [503 unavailable]"
    ]
    port.faults["post_metrics"] = [AccessTokenError("no", status=401, code="token_invalid")]
    with pytest.raises(AccessTokenError):
        run_round(ctx)


def test_a_slot_that_cannot_be_given_back_does_not_fail_the_round(
    make_context: MakeContext, port: MemoryPort
) -> None:
    ctx, _ = make_context(round_requests="separate")
    port.faults["release_slot"] = [TransportError("gone")]

    result = run_round(ctx)

    assert result is not None
    assert port.calls[-2:] == ["release_slot", "post_metrics"]


def test_a_too_stale_update_commits_nothing_and_the_run_retrains_the_same_round(
    make_context: MakeContext, server: FakeServer
) -> None:
    # Prepare
    ctx, sink = make_context(max_rounds=1)
    server.too_stale_next = 1

    # Execute
    summary = run(ctx)

    # Assert
    assert sink.names == ["key_epoch", "initial_model", "rejected", "update", "stopped"]
    rejected = sink.events[2]
    assert dataclasses.asdict(rejected)["code"] == "too_stale"
    assert summary.stop_reason == "max_rounds"
    assert [r.round for r in summary.results] == [1]
    assert isinstance(summary.results[0], RoundResult)
    assert server.applied == 1
    assert ctx.state.load_progress().rounds == 1


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_rounds_reach_no_http_library_even_through_other_modules() -> None:
    # Prepare: the rounds package and every fl_client module it imports, transitively
    root = Path(fl_client.__file__).parent
    todo = sorted((root / "rounds").glob("*.py"))
    seen: dict[Path, set[str]] = {}

    # Execute
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = _imports(path)
        for name in seen[path]:
            if name.startswith("fl_client."):
                module = root.joinpath(*name.split(".")[1:])
                todo += [
                    p for p in (module.with_suffix(".py"), module / "__init__.py") if p.exists()
                ]

    # Assert
    reached = {name for names in seen.values() for name in names}
    assert not {n for n in reached if n.split(".")[0] in ("httpx", "fastapi")}
    assert not {n for n in reached if n.startswith(("fl_client.transport", "fl_client.session"))}
    assert root / "rounds" / "loop.py" in seen


# -- two requests per update (fl_client.rounds.lease) ---------------------------------------


def test_in_steady_state_a_round_is_one_leased_pull_and_one_update_with_its_metrics(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: a client past its first round (the job read, the model cached)
    ctx, _ = make_context()
    run_round(ctx)
    before = len(port.calls)

    # Execute
    second = run_round(ctx)
    third = run_round(ctx)

    # Assert: two calls per round, the pull asking only for what changed, and each
    # round's metrics kept with its update, on the version it trained on
    assert port.calls[before:] == ["lease_model", "push_update"] * 2
    assert port.since[-2:] == [0, 1]
    assert second is not None
    assert third is not None
    assert [m["version"] for m in server.metrics] == [0, 1, 2]
    assert third.eval_before is not None
    assert server.metrics[-1]["metrics"] == third.eval_before.metrics


def test_separate_requests_are_the_six_of_before(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    ctx, _ = make_context(round_requests="separate")
    run_round(ctx)
    before = len(port.calls)

    run_round(ctx)

    assert port.calls[before:] == [
        "job",
        "request_slot",
        "get_model",
        "push_update",
        "release_slot",
        "post_metrics",
    ]
    assert [m["version"] for m in server.metrics] == [0, 1]


def test_a_server_without_leases_gets_separate_requests_and_every_report(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: an older fl_server (404 not_found on POST …/leases, no X-Hefl-Metrics)
    server.legacy = True
    ctx, _ = make_context()

    # Execute
    run_round(ctx)
    run_round(ctx)

    # Assert: asked once, then the separate requests; no report lost
    assert port.calls.count("lease_model") == 1
    assert port.calls[-3:] == ["push_update", "release_slot", "post_metrics"]
    assert not ctx.combined_requests
    assert [m["version"] for m in server.metrics] == [0, 1]


def test_a_report_that_is_no_finite_json_is_left_out_and_the_update_still_goes(
    make_context: MakeContext, port: MemoryPort, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a model whose loss diverged
    ctx, sink = make_context()
    run_round(ctx)
    from fl_client.training import EvalResult

    monkeypatch.setattr(EvalResult, "to_metrics", lambda self: {"n_samples": 3, "loss": np.inf})

    # Execute
    result = run_round(ctx)

    # Assert
    assert result is not None
    assert server.applied == 2
    assert [m["version"] for m in server.metrics] == [0]
    warnings = [e.message for e in sink.events if isinstance(e, ClientWarning)]
    assert warnings == ["metrics for version 1 not reported: a metric is not a finite number"]


def test_a_report_the_server_refuses_costs_no_update(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: the server refuses the report that comes with the update
    ctx, sink = make_context()
    run_round(ctx)
    refused = fl_client.InvalidRequestError("bad", status=422, code="metrics_invalid")
    port.faults["push_update"] = [refused]

    # Execute
    result = run_round(ctx)

    # Assert: the update was sent again without the report, and applied
    assert result is not None
    assert server.applied == 2
    assert port.calls[-2:] == ["push_update", "push_update"]
    warnings = [e.message for e in sink.events if isinstance(e, ClientWarning)]
    assert warnings == ["metrics for version 1 not reported: bad [422 metrics_invalid]"]


def test_a_paused_job_met_at_the_leased_pull_is_read_again_after_the_pause(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: a client in steady state, then the administrator pauses the job
    ctx, _ = make_context(max_rounds=2)
    run_round(ctx)
    server.pause()
    calls = len(port.calls)

    # Execute: the run waits out the pause (the fake sleeps resume it)
    with pytest.raises(fl_client.JobPausedError):
        run_round(ctx)

    # Assert: the refused pull forgot the job, read again once the pause is over
    assert port.calls[calls:] == ["lease_model"]
    assert ctx.job is None
    server.resume()
    assert run_round(ctx) is not None
    assert port.calls[calls + 1 :] == ["job", "lease_model", "push_update"]


def test_a_job_done_meanwhile_ends_the_round_at_the_leased_pull(
    make_context: MakeContext, port: MemoryPort, server: FakeServer
) -> None:
    # Prepare: a client in steady state; the administrator stops the job
    ctx, _ = make_context()
    run_round(ctx)
    server.stop()
    calls = len(port.calls)

    # Execute
    result = run_round(ctx)

    # Assert: no update, and the job is read again next time
    assert result is None
    assert port.calls[calls:] == ["lease_model"]
    assert ctx.job is None
