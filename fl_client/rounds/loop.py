"""The client loop: leased pull → train → encrypt → journal → push with the metrics, until done."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from crypto import ClientCipher, ModelLayout
from fl_client.errors import (
    AuthError,
    ClientQuarantinedError,
    IntegrityError,
    JobNotTrainingError,
    JobPausedError,
    JobRotatingError,
    LeaseRotatingError,
    PrivacyBudgetSpentError,
    ProtocolError,
    RetrainError,
    ServiceError,
    TransportError,
)
from fl_client.events import ClientWarning, ProgressBar, RoundResult, Stopped
from fl_client.rounds.context import RoundContext
from fl_client.rounds.job import check_layout, wait_while_paused
from fl_client.rounds.lease import give_back_next_lease, metrics_report, model_lease, round_job
from fl_client.rounds.pull import Pull, pull_model
from fl_client.rounds.push import resume, send
from fl_client.rounds.repair import wait_for_repair
from fl_client.rounds.rotation import settle_rotation
from fl_client.state import PendingUpdate, Progress
from fl_client.training import (
    EvalResult,
    LocalRound,
    evaluate,
    load_personal,
    load_shared,
    local_round,
    planned_steps,
    round_seed,
    train_local,
)
from fl_client.updates import write_update

__all__ = ["RunSummary", "evaluate_global", "load_global", "run", "run_round"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    rounds: int
    stop_reason: str
    final_version: int | None
    final_eval: EvalResult | None
    results: list[RoundResult] = field(default_factory=list)


def run(ctx: RoundContext, *, stop_requested: Callable[[], bool] = lambda: False) -> RunSummary:
    """Rounds until the job is done or a stop condition (max rounds, duration, request).

    A journaled update left by a crash is sent first. While the job is paused the client
    waits (the update it could not send stays journaled and is sent after the resume); a
    job that is done, for whatever reason, ends the run cleanly. A model that fails an
    integrity check is reported and never trained on: the client answers the server's
    probes until the job is repaired, then trains on.

    Raises
    ------
    ClientQuarantinedError
        The server refuses this hospital's updates until an administrator releases it.
    PrivacyBudgetSpentError
        One more round would take this hospital beyond the study's ε (``[privacy]``).
    KeyIdMismatchError
        The job's keys are not the ones keyauth serves for its epoch any more.
    """
    started = ctx.clock()
    results: list[RoundResult] = []
    ctx.stop_requested = lambda: bool(_stop_reason(ctx, stop_requested(), len(results), started))
    stale_in_row = 0
    reason = ""
    while not reason:
        reason = _stop_reason(ctx, stop_requested(), len(results), started)
        if reason:
            break
        try:
            result = resume(ctx) or run_round(ctx)
        except RetrainError:
            stale_in_row += 1
            if stale_in_row >= ctx.settings.max_consecutive_stale:
                raise
            continue
        except JobPausedError:
            wait_while_paused(ctx)
            continue
        except IntegrityError as failure:
            wait_for_repair(ctx, failure)
            continue
        except ClientQuarantinedError as exc:
            _quarantined(ctx, exc, len(results))
        except PrivacyBudgetSpentError:
            ctx.events.emit(Stopped(reason="privacy_budget_spent", rounds=len(results)))
            raise
        except JobNotTrainingError:
            result = None
        stale_in_row = 0
        if result is None:
            reason = "job_done"
        else:
            results.append(result)
    give_back_next_lease(ctx)
    job_stop_reason, final_version, final_eval = None, None, None
    if reason == "job_done":
        job_stop_reason, final_version, final_eval = _final_evaluation(ctx)
    ctx.events.emit(
        Stopped(
            reason=reason,
            rounds=len(results),
            job_stop_reason=job_stop_reason,
            final_version=final_version,
            final_metrics=final_eval.to_metrics() if final_eval is not None else None,
        )
    )
    return RunSummary(
        rounds=len(results),
        stop_reason=reason,
        final_version=final_version,
        final_eval=final_eval,
        results=results,
    )


def _final_evaluation(ctx: RoundContext) -> tuple[str | None, int | None, EvalResult | None]:
    """Why the job is done, and its final model's version and metrics here (reported);
    no metrics for a final model that fails a check."""
    job = ctx.server.job()
    if job.layout_fingerprint is None or job.state == "waiting_for_initial_model":
        return job.stop_reason, None, None
    try:
        version, evaluation = evaluate_global(ctx)
    except IntegrityError as exc:
        ctx.events.emit(ClientWarning(f"the final model was not evaluated: {exc}"))
        return job.stop_reason, None, None
    report_metrics(ctx, version, evaluation)
    return job.stop_reason, version, evaluation


def _quarantined(ctx: RoundContext, exc: ClientQuarantinedError, rounds: int) -> NoReturn:
    # the journaled update would be refused too, and may be what was corrupt: drop it
    ctx.state.clear_pending()
    ctx.events.emit(Stopped(reason="quarantined", rounds=rounds))
    raise ClientQuarantinedError(
        f"this hospital is quarantined on job {ctx.spec.name!r}: an update it sent "
        "corrupted the model and was removed, and the server refuses its updates to this "
        "job until an administrator releases it. Nothing more is sent; ask the study's "
        f"administrator, then start again (the server said: {exc.detail})",
        status=exc.status,
        code=exc.code,
        problem=exc.problem,
    ) from None


def _stop_reason(ctx: RoundContext, requested: bool, rounds: int, started: float) -> str:
    settings = ctx.settings
    if requested:
        return "stopped"
    if settings.max_rounds is not None and rounds >= settings.max_rounds:
        return "max_rounds"
    if settings.max_duration is not None and ctx.clock() - started >= settings.max_duration:
        return "max_duration"
    return ""


def run_round(ctx: RoundContext) -> RoundResult | None:
    """Pull, train, push one update. ``None`` when the job is done.

    Raises
    ------
    RetrainError
        The server rejected the update as too stale, or for another key epoch or
        version (nothing was committed), or the job moves to a new key epoch
        (``JobRotatingError``; this client was asked to stop while it waited): call
        again to re-pull and retrain.
    IntegrityError
        The pulled model failed a check: it was reported, nothing was trained.
    PrivacyBudgetSpentError
        One more round would exceed this hospital's ε: nothing was trained.
    """
    try:
        return _one_round(ctx)
    except LeaseRotatingError:
        # Combined requests keep the job as last read: a lease refused as job_rotating
        # is how this client learns of a rotation (nothing was trained). The job is read
        # again, and this client takes part at once.
        return _one_round(ctx)


def _one_round(ctx: RoundContext) -> RoundResult | None:
    resume(ctx)
    job = ctx.job = settle_rotation(ctx, round_job(ctx))
    if job.state == "done":
        return None
    if job.rotation is not None:  # and this client was asked to stop while it waited
        raise JobRotatingError(
            f"job {job.name!r} is moving to key epoch {job.rotation.key_epoch}",
            status=409,
            code="job_rotating",
        )
    if job.state == "paused":  # and this client was asked to stop while it waited
        raise JobPausedError(f"job {job.name!r} is paused", status=409, code="job_paused")
    if ctx.privacy is not None:
        ctx.privacy.require_budget(job.name)
    layout = check_layout(ctx, job)
    cipher = ctx.keys.for_job(job)
    progress = ctx.state.load_progress()
    with model_lease(ctx, layout, job) as pulled:
        if pulled is None:  # the job was done by the time this client asked
            return None
        if pulled.cache.key_epoch != job.key_epoch:
            cipher = ctx.keys.for_job(job, pulled.cache.key_epoch)
        trained = _train(ctx, layout, pulled, progress)
        if ctx.privacy is not None:
            # spent before the update can leave: a crash, a resend or a retrain after
            # too_stale never hands the hospital back what this round cost
            ctx.state.save_privacy(ctx.privacy.ledger())
        pending = _encrypt(ctx, cipher, layout, pulled, progress, trained)
        ctx.state.write_pending(pending)
        result = send(ctx, pending, trained.before)
    if not ctx.combined_requests:  # combined: the report went with the update
        report_metrics(ctx, pulled.cache.version, trained.before)
    return result


def load_global(ctx: RoundContext, publish_wait: float = 30.0) -> int:
    """Pull the current global model into ``ctx.model``, with this client's personal
    tensors; its version.

    The server may serve a model a few versions behind the one it has applied (the
    job's version); this waits up to ``publish_wait`` seconds for it.

    Raises
    ------
    ProtocolError
        The job has no model yet.
    IntegrityError
        The model failed a check (it was reported): it is not loaded.
    """
    job = ctx.server.job()
    if job.state == "waiting_for_initial_model" or job.layout_fingerprint is None:
        raise ProtocolError(f"job {job.name!r} has no model yet")
    layout = check_layout(ctx, job)
    pulled = pull_model(ctx, layout, job)
    deadline = ctx.clock() + publish_wait
    while pulled.cache.version < job.version and ctx.clock() < deadline:
        ctx.sleep(0.2)
        pulled = pull_model(ctx, layout, job)
    load_shared(ctx.model, layout, pulled.cache.blocks)
    load_personal(ctx.model, personal_values(ctx, ctx.state.load_progress(), layout))
    return pulled.cache.version


def evaluate_global(ctx: RoundContext, publish_wait: float = 30.0) -> tuple[int, EvalResult]:
    """The current global model (``load_global``) on the held-out split, with the
    metrics of the study's task."""
    version = load_global(ctx, publish_wait)
    return version, evaluate(ctx.model, ctx.data.test, ctx.train_config.task)


def report_metrics(ctx: RoundContext, version: int, evaluation: EvalResult) -> None:
    """Post a model version's metrics on the held-out rows (``n_samples`` of them), and
    the ε this hospital has spent (``[privacy]``); a failure is a warning, except a
    refused login."""
    metrics = evaluation.to_metrics()
    privacy = ctx.privacy.report() if ctx.privacy is not None else None
    try:
        ctx.server.post_metrics(version, metrics, privacy)
    except (ServiceError, TransportError) as exc:
        if isinstance(exc, AuthError):
            raise
        ctx.events.emit(ClientWarning(f"metrics for version {version} not reported: {exc}"))


def personal_values(ctx: RoundContext, progress: Progress, layout: ModelLayout) -> dict[str, Any]:
    """This client's personal tensors: as last trained, or as initialized."""
    if progress.personal and progress.fingerprint == layout.fingerprint:
        return dict(progress.personal)
    shared = set(layout.names)
    initial = ctx.layouts.initial_state
    return {k: v.numpy().copy() for k, v in initial.items() if k not in shared}


def _train(ctx: RoundContext, layout: ModelLayout, pulled: Pull, progress: Progress) -> LocalRound:
    total = planned_steps(ctx.data.train, ctx.train_config)
    with ctx.events.bar(total, "train", "step") as bar:
        return local_round(
            ctx.model,
            layout,
            pulled.cache.blocks,
            personal_values(ctx, progress, layout),
            ctx.data.train,
            ctx.data.test,
            ctx.train_config,
            round_seed(ctx.spec.model.seed, progress.rounds),
            on_step=_on_step(ctx, bar),
            train=ctx.privacy.train if ctx.privacy is not None else train_local,
        )


def _on_step(ctx: RoundContext, bar: ProgressBar) -> Callable[[float], None]:
    delay = ctx.settings.step_delay

    def on_step(_loss: float) -> None:
        bar.update()
        if delay:
            ctx.sleep(delay)

    return on_step


def _encrypt(
    ctx: RoundContext,
    cipher: ClientCipher,
    layout: ModelLayout,
    pulled: Pull,
    progress: Progress,
    trained: LocalRound,
) -> PendingUpdate:
    """The round's update, encrypted, with the progress it commits once acknowledged."""
    key_epoch = pulled.cache.key_epoch
    residual = progress.residual if progress.fingerprint == layout.fingerprint else None
    with ctx.events.bar(None, "encrypt", "block") as bar:
        # encrypted block by block straight into the journal's envelope file
        prepared, envelope = ctx.state.write_pending_envelope(
            lambda sink: write_update(
                cipher,
                layout,
                trained.delta,
                residual,
                ctx.compression,
                sink,
                step=ctx.spec.training.client_step,
                round_=progress.rounds,
                base_version=pulled.cache.version,
                key_epoch=key_epoch,
                on_block=bar.update,
                clip=ctx.spec.privacy.clip if ctx.spec.privacy is not None else None,
            )
        )
    return PendingUpdate(
        update_id=prepared.update_id,
        base_version=pulled.cache.version,
        key_epoch=key_epoch,
        envelope=envelope,
        progress=Progress(
            rounds=progress.rounds + 1,
            fingerprint=layout.fingerprint,
            residual=prepared.residual,
            personal=trained.personal,
            last_update_id=prepared.update_id,
        ),
        summary={
            "wire": prepared.report.to_dict(),
            "pull_bytes": pulled.nbytes,
            "pull_blocks": pulled.nblocks,
            "train_steps": trained.train.steps,
            "train_loss": trained.train.mean_loss,
            "metrics": metrics_report(
                pulled.cache.version,
                trained.before,
                ctx.privacy.report() if ctx.privacy is not None else None,
            ),
            # declared with the update (X-Hefl-Samples): the server weighs by the rows
            # behind it, and a resend after a crash declares the same
            "samples": len(ctx.data.train),
        },
    )
