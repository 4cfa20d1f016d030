"""Taking part in a key rotation: re-encrypt the model when asked, otherwise wait it out."""

# docs/protocol.md, "Key rotation". While a job moves to a new key epoch the server keeps
# its model at one version and names one hospital to re-encrypt it. That hospital pulls
# the version, decrypts and checks it under the old epoch (an integrity failure is
# reported as for any pull), encrypts every block under the new epoch and uploads it.
# Every other hospital waits; once the job names its new epoch, the next round fetches
# that epoch's secret context from keyauth (a revoked hospital gets none) and trains on.

from __future__ import annotations

from fl_client.errors import RotationNotOfferedError
from fl_client.events import ModelReencrypted, RotationWaiting
from fl_client.rounds.context import RoundContext
from fl_client.rounds.job import check_layout
from fl_client.rounds.port import JobInfo, Rotation
from fl_client.rounds.pull import pull_model
from fl_client.updates import encrypt_model

__all__ = ["reencrypt", "settle_rotation"]


def settle_rotation(ctx: RoundContext, job: JobInfo) -> JobInfo:
    """Until the job's key rotation ends: re-encrypt the model if this hospital is asked,
    else poll the job every ``settings.integrity_poll`` seconds. Returns the job as last
    seen (the rotation over, the job done, or this hospital asked to stop).

    Raises
    ------
    IntegrityError
        The model failed a check under the old epoch (reported): nothing re-encrypted.
    KeyIdMismatchError
        keyauth's context of the new epoch is not of the key id the rotation names.
    """
    said = False
    while job.rotation is not None and job.state != "done":
        rotation = job.rotation
        if rotation.client_id is not None and rotation.client_id == ctx.client_id:
            job = reencrypt(ctx, job, rotation)
            continue
        if ctx.stop_requested():
            return job
        if not said:
            ctx.events.emit(
                RotationWaiting(job=job.name, key_epoch=rotation.key_epoch, version=job.version)
            )
            said = True
        ctx.sleep(ctx.settings.integrity_poll)
        job = ctx.server.job()
    return job


def reencrypt(ctx: RoundContext, job: JobInfo, rotation: Rotation) -> JobInfo:
    """Re-encrypt version ``rotation.version`` under ``rotation.key_epoch`` and upload it;
    the job after (under its new epoch, or as the server moved on)."""
    layout = check_layout(ctx, job)
    new_cipher = ctx.keys.for_epoch(rotation.key_epoch, rotation.key_id)
    pulled = pull_model(ctx, layout, job)  # decrypted under the old epoch, and checked
    if pulled.cache.version != rotation.version:
        ctx.sleep(ctx.settings.integrity_poll)  # not yet published: look again
        return ctx.server.job()
    with ctx.events.bar(layout.n_blocks, "re-encrypt", "block") as bar:
        envelope = encrypt_model(
            new_cipher,
            layout,
            pulled.cache.blocks,
            version=rotation.version,
            key_epoch=rotation.key_epoch,
            on_block=bar.update,
        )
    try:
        after = ctx.server.put_rotated_model(envelope)
        swapped = True
    except RotationNotOfferedError:
        # another hospital was asked meanwhile, or the answer to this upload was lost
        after, swapped = ctx.server.job(), False
    ctx.events.emit(
        ModelReencrypted(
            job=job.name,
            from_epoch=job.key_epoch,
            key_epoch=rotation.key_epoch,
            version=rotation.version,
            swapped=swapped,
        )
    )
    return after
