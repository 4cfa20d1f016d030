"""Waiting out a corrupted model: answer the server's probes until the job is repaired."""

# docs/protocol.md, "Integrity". A hospital whose check failed trains nothing and polls
# the job. While the server locates the bad update it names a probe: a version as it was
# (any waiting hospital checks it), or a good version plus one update (only that update's
# sender may fetch it). The hospital checks what it is served and reports ok or not with
# that version. Once the job is healthy again past the version that failed, training
# goes on from the repaired model.

from __future__ import annotations

from crypto import check_model, get_profile
from fl_client.errors import (
    AuthError,
    IntegrityError,
    ProbeNotOfferedError,
    ProtocolError,
    ServiceError,
    TransportError,
)
from fl_client.events import ClientWarning, IntegrityRestored, ProbeAnswered
from fl_client.rounds.context import RoundContext
from fl_client.rounds.integrity import report_of, send_report
from fl_client.rounds.job import check_layout
from fl_client.rounds.port import JobInfo, Probe
from fl_client.rounds.pull import decrypt_blocks, download_bar, open_model

__all__ = ["answer_probe", "wait_for_repair"]


def wait_for_repair(ctx: RoundContext, failure: IntegrityError) -> JobInfo:
    """Poll the job every ``settings.integrity_poll`` seconds, answering the probes meant
    for this hospital, until the job is healthy at a version past ``failure.version``,
    or done, or this hospital is asked to stop (``ctx.stop_requested``).

    Returns
    -------
    JobInfo
        The job as last seen.
    """
    answered: set[Probe] = set()
    said_stuck = False
    while True:
        # first a pause: the report just went, and the server needs a moment to act on it
        ctx.sleep(ctx.settings.integrity_poll)
        job = ctx.server.job()
        if ctx.stop_requested() or job.state == "done":
            return job
        integrity = job.integrity
        if integrity.state == "healthy":
            if job.version > failure.version:
                ctx.events.emit(
                    IntegrityRestored(
                        job=job.name, failed_version=failure.version, version=job.version
                    )
                )
                return job
            continue
        probe = integrity.probe
        if probe is None and integrity.state == "locating" and not said_stuck:
            # The search cannot go on by itself (docs/fl_server.md, "Integrity"): say so
            # once, so the hospital knows why it waits, then keep polling.
            ctx.events.emit(
                ClientWarning(
                    f"job {job.name!r} is locating a corrupted version but asks this "
                    "hospital nothing: the search needs the administrator (hefl-admin job "
                    f"show {job.name} says why); waiting"
                )
            )
            said_stuck = True
        if probe is None or probe in answered or not _meant_for(ctx, probe):
            continue
        if answer_probe(ctx, job, probe):
            answered.add(probe)


def _meant_for(ctx: RoundContext, probe: Probe) -> bool:
    # a version as it was, for anyone; a version plus an update, for its sender only
    return probe.update_id is None or (
        probe.client_id is not None and probe.client_id == ctx.client_id
    )


def answer_probe(ctx: RoundContext, job: JobInfo, probe: Probe) -> bool:
    """Fetch the probed model, check it and report the result with its version (and
    update id); ``True`` once answered, or once the server no longer offers the probe,
    ``False`` if it could not be fetched or reported (the next look tries again).

    Raises
    ------
    AuthError
        The server refused this hospital (quarantined, revoked).
    """
    layout = check_layout(ctx, job)
    try:
        with ctx.events.bar(None, "probe", "B", unit_scale=True) as bar:
            download = ctx.server.get_probe_model(
                probe.version, probe.update_id, on_chunk=download_bar(bar)
            )
    except ProbeNotOfferedError:
        return True  # the search moved on: the next look at the job says where
    except (ServiceError, TransportError) as exc:
        if isinstance(exc, AuthError):
            raise
        ctx.events.emit(ClientWarning(f"probe of version {probe.version} not fetched: {exc}"))
        return False
    model = open_model(download, layout, get_profile(job.profile).max_block_bytes)
    if len(model.blocks) != layout.n_blocks:
        raise ProtocolError(
            f"probe of version {probe.version}: {len(model.blocks)} of {layout.n_blocks} blocks"
        )
    cipher = ctx.keys.for_job(job, model.key_epoch)
    blocks = decrypt_blocks(ctx, cipher, model, layout, None)
    result = check_model(layout, cipher.profile, blocks)
    if not send_report(ctx, report_of(probe.version, result, probe.update_id)):
        return False
    ctx.events.emit(
        ProbeAnswered(
            version=probe.version, update_id=probe.update_id, ok=result.ok, check=result.check
        )
    )
    return True
