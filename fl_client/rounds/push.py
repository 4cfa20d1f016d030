"""Sending a journaled update, committing its progress on the ack, resending after a crash."""

# A round is a transaction. The encrypted update, its id and the progress it commits
# (round number, error-feedback residual, personal tensors) are journaled before the update
# is sent; the progress is committed only when the server acknowledges it. After a crash the
# journaled bytes are resent with the same id, which the server acknowledges as a duplicate
# instead of applying twice. A rejected update (too stale) leaves the progress untouched.
# An update refused because the job is paused stays journaled: it is sent after the resume.

from __future__ import annotations

from fl_client.errors import (
    ConflictError,
    InvalidRequestError,
    JobNotTrainingError,
    JobPausedError,
    ProtocolError,
    RetrainError,
)
from fl_client.events import Rejected, Resent, RoundResult
from fl_client.rounds.context import RoundContext
from fl_client.rounds.lease import push
from fl_client.rounds.port import UpdateAck
from fl_client.state import PendingUpdate, Progress
from fl_client.training import EvalResult

__all__ = ["resume", "send"]


def resume(ctx: RoundContext) -> RoundResult | None:
    """Resend a journaled update left by a crash or a pause, with its original id.

    Raises
    ------
    JobPausedError
        The job is still paused; the update stays journaled.
    """
    pending = ctx.state.load_pending()
    if pending is None:
        return None
    progress = ctx.state.load_progress()
    if progress.last_update_id == pending.update_id:
        ctx.state.clear_pending()  # committed before the crash; only the journal was left
        return None
    ctx.events.emit(Resent(update_id=str(pending.update_id), base_version=pending.base_version))
    try:
        return send(ctx, pending, eval_before=None)
    except (RetrainError, JobNotTrainingError):
        return None


def send(ctx: RoundContext, pending: PendingUpdate, eval_before: EvalResult | None) -> RoundResult:
    """Push a journaled update; on its acknowledgement commit the progress it carries.

    Raises
    ------
    RetrainError, JobNotTrainingError
        The server refused the update; the journal entry is dropped, nothing committed.
    JobPausedError
        The job is paused; the journal entry is kept, to be sent after the resume.
    """
    size = len(pending.envelope)
    with ctx.events.bar(size, "push", "B", unit_scale=True) as bar:
        try:
            ack = push(ctx, pending)
        except JobPausedError:
            raise
        except (RetrainError, JobNotTrainingError) as exc:
            ctx.state.clear_pending()
            ctx.events.emit(
                Rejected(
                    update_id=str(pending.update_id),
                    code=exc.code,
                    current_version=exc.problem.get("current_version"),
                )
            )
            raise
        except (InvalidRequestError, ConflictError) as exc:
            # this exact envelope will never be accepted: do not resend it forever
            ctx.state.clear_pending()
            raise ProtocolError(f"the server refused the update for good: {exc}") from exc
        bar.update(size)
    if ack.update_id != str(pending.update_id):
        raise ProtocolError(f"push update: acknowledged {ack.update_id}, sent {pending.update_id}")
    progress = ctx.state.acknowledge_pending(pending)
    result = round_result(progress, pending, ack, eval_before)
    ctx.events.emit(result)
    return result


def round_result(
    progress: Progress, pending: PendingUpdate, ack: UpdateAck, eval_before: EvalResult | None
) -> RoundResult:
    """The numbers of an acknowledged update, from its journal entry and the answer."""
    summary = dict(pending.summary)
    return RoundResult(
        round=progress.rounds,
        update_id=ack.update_id,
        base_version=pending.base_version,
        version=ack.version,
        staleness=ack.staleness,
        weight=ack.weight,
        duplicate=ack.duplicate,
        wire={k: v for k, v in summary.get("wire", {}).items()},
        pull_bytes=int(summary.get("pull_bytes", 0)),
        pull_blocks=int(summary.get("pull_blocks", 0)),
        train_steps=int(summary.get("train_steps", 0)),
        train_loss=float(summary.get("train_loss", float("nan"))),
        eval_before=eval_before,
    )
