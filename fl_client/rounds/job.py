"""The job as a client meets it: start it from the spec, check its layout, wait out a pause."""

from __future__ import annotations

import contextlib

from crypto import LayoutError, ModelLayout, get_profile
from fl_client.errors import (
    ClientError,
    InitialModelExistsError,
    JobPausedError,
    LayoutConflictError,
    ProtocolError,
)
from fl_client.events import InitialModelPut, Paused, Resumed
from fl_client.rounds.context import RoundContext
from fl_client.rounds.port import JobInfo, ServerPort
from fl_client.updates import encrypt_initial_model

__all__ = ["check_layout", "current_job", "layout_mismatch", "start_job", "wait_while_paused"]

_KNOWN_STATES = ("training", "done", "waiting_for_initial_model", "paused")


def current_job(ctx: RoundContext) -> JobInfo:
    """The job once it is training or done: started first with the spec's initial model
    if it had none, waited for while it is paused (still paused only if the client was
    asked to stop meanwhile)."""
    job = ctx.server.job()
    while True:
        if job.state not in _KNOWN_STATES:
            raise ProtocolError(f"job state {job.state!r} is not one protocol.md defines")
        if job.state == "paused":
            job = wait_while_paused(ctx)
            if job.state == "paused":
                return job
        elif job.state == "waiting_for_initial_model":
            with contextlib.suppress(JobPausedError):  # paused meanwhile: the next look waits
                start_job(ctx, job)
            job = ctx.server.job()
        else:
            return job


def wait_while_paused(ctx: RoundContext) -> JobInfo:
    """Poll the job with a growing delay until it is no longer paused, or the client is
    asked to stop (``ctx.stop_requested``); say so once.

    A journaled update stays journaled meanwhile: the caller sends it after the resume.
    """
    settings = ctx.settings
    job = ctx.server.job()
    if job.state != "paused":
        return job
    ctx.events.emit(Paused(job=job.name, version=job.version))
    attempt = 0
    while job.state == "paused":
        if ctx.stop_requested():
            return job
        attempt += 1
        ctx.sleep(
            min(settings.backoff_max, max(settings.backoff_base, 0.1) * 2 ** min(attempt, 16))
        )
        job = ctx.server.job()
    ctx.events.emit(Resumed(job=job.name, state=job.state))
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
    """Put the layout and the spec's seeded initial model; ``False`` if another won.

    Every hospital builds the same initial model from the spec, so it does not matter
    which one's arrives first.
    """
    layout = ctx.layouts.get(get_profile(job.profile).block_size)
    cipher = ctx.keys.for_job(job)  # keys the job was not created under: nothing is sent
    try:
        ctx.server.put_layout(layout.to_json())
    except LayoutConflictError as exc:
        raise LayoutConflictError(
            layout_mismatch(layout, _job_layout(ctx.server)), status=exc.status, code=exc.code
        ) from exc
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
            seed=ctx.spec.model.seed,
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
        "the job's model layout differs from the one this client built from the job's "
        "spec (model, data.features, communication.personal): another hefl or torch version?"
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
