"""The job as a client meets it: start it with this client's initial model, check its layout."""

from __future__ import annotations

from crypto import LayoutError, ModelLayout, get_profile
from fl_client.errors import (
    ClientError,
    InitialModelExistsError,
    LayoutConflictError,
    ProtocolError,
)
from fl_client.events import InitialModelPut
from fl_client.rounds.context import RoundContext
from fl_client.rounds.port import JobInfo, ServerPort
from fl_client.updates import encrypt_initial_model

__all__ = ["check_layout", "current_job", "layout_mismatch", "start_job"]

_KNOWN_STATES = ("training", "done", "waiting_for_initial_model")


def current_job(ctx: RoundContext) -> JobInfo:
    """The job, started first with this client's initial model if it had none."""
    job = ctx.server.job()
    if job.state == "waiting_for_initial_model":
        start_job(ctx, job)
        job = ctx.server.job()
    if job.state not in _KNOWN_STATES:
        raise ProtocolError(f"job state {job.state!r} is not one protocol.md defines")
    return job


def check_layout(ctx: RoundContext, job: JobInfo) -> ModelLayout:
    """This client's layout for the job; a ``LayoutConflictError`` if it is not the job's."""
    layout = ctx.layouts.get(get_profile(job.profile).block_size)
    if job.layout_fingerprint is not None and job.layout_fingerprint != layout.fingerprint:
        raise LayoutConflictError(
            layout_mismatch(layout, _job_layout(ctx.server)),
            status=409,
            code="layout_mismatch",
        )
    return layout


def start_job(ctx: RoundContext, job: JobInfo) -> bool:
    """Put the layout and this client's seeded initial model; ``False`` if another won."""
    layout = ctx.layouts.get(get_profile(job.profile).block_size)
    try:
        ctx.server.put_layout(layout.to_json())
    except LayoutConflictError as exc:
        raise LayoutConflictError(
            layout_mismatch(layout, _job_layout(ctx.server)), status=exc.status, code=exc.code
        ) from exc
    cipher = ctx.keys.cipher(job.key_epoch)
    blocks = layout.flatten(ctx.layouts.initial_state)
    with ctx.events.bar(layout.n_blocks, "encrypt initial model", "block") as bar:
        envelope = encrypt_initial_model(
            cipher, layout, blocks, key_epoch=job.key_epoch, on_block=bar.update
        )
    try:
        ctx.server.put_initial_model(envelope)
    except InitialModelExistsError:
        return False
    ctx.events.emit(
        InitialModelPut(
            bytes=len(envelope),
            blocks=layout.n_blocks,
            shared_params=layout.total_params,
            seed=ctx.settings.seed,
        )
    )
    return True


def _job_layout(server: ServerPort) -> ModelLayout | None:
    try:
        return ModelLayout.from_json(server.get_layout())
    except (ClientError, LayoutError):
        return None


def layout_mismatch(mine: ModelLayout, theirs: ModelLayout | None) -> str:
    """Why this client's layout is not the job's, as precisely as ``theirs`` allows."""
    base = (
        "the job's model layout differs from this client's: every client needs the same "
        "--model, dataset features and --personal patterns"
    )
    if theirs is None:
        return base
    for own, other in zip(mine.tensors, theirs.tensors, strict=False):
        if own != other:
            return f"{base} (first difference: job has {other}, this client {own})"
    return (
        f"{base} (job: {len(theirs.tensors)} tensors, personal {list(theirs.personal)}; "
        f"this client: {len(mine.tensors)}, personal {list(mine.personal)})"
    )
