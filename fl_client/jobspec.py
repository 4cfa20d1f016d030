"""A job's study spec as a hospital takes it: checked against the job's hash, then obeyed."""

# Everything the hospitals of a job share comes from here, never from a hospital's flags:
# a hospital that trained with another learning rate or model would still be accepted by
# the server (it cannot read the updates), and would quietly spoil the shared model.

from __future__ import annotations

import hashlib

from fl_client.errors import SpecMismatchError
from fl_client.rounds.port import JobInfo, ServerPort
from fl_client.training import TrainConfig
from fl_client.updates import CompressionConfig
from hefl_study import SpecError, StudySpec, spec_from_json

__all__ = ["compression_config", "fetch_spec", "train_config", "verify_spec"]


def verify_spec(job: JobInfo, body: bytes) -> StudySpec:
    """The spec the server gave for ``job``, if it is the study the job names.

    Checks that the SHA-256 of ``body`` is the job's ``spec_sha256``, and that this
    client's ``hefl_study`` reads it back to the same canonical JSON (so it trains
    exactly what the administrator created, with no field it does not know).

    Raises
    ------
    SpecMismatchError
        Saying which check failed: nothing may be trained then.
    """
    digest = hashlib.sha256(body).hexdigest()
    if digest != job.spec_sha256:
        raise SpecMismatchError(
            f"job {job.name!r}: the spec the server sent has SHA-256 {digest[:16]}..., the "
            f"job's is {job.spec_sha256[:16]}...: refusing to train on it"
        )
    try:
        spec = spec_from_json(body.decode("utf-8"))
    except (UnicodeDecodeError, SpecError) as exc:
        raise SpecMismatchError(
            f"job {job.name!r}: this client cannot read the job's spec (another hefl "
            f"version?): {exc}"
        ) from None
    if spec.sha256 != job.spec_sha256:
        raise SpecMismatchError(
            f"job {job.name!r}: this client reads the job's spec as another study (its "
            f"canonical form hashes to {spec.sha256[:16]}...; another hefl version?)"
        )
    if spec.name != job.name:
        raise SpecMismatchError(f"job {job.name!r}: the server sent the spec of {spec.name!r}")
    return spec


def fetch_spec(port: ServerPort) -> tuple[JobInfo, StudySpec]:
    """The job and its spec, verified (``verify_spec``)."""
    job = port.job()
    return job, verify_spec(job, port.spec())


def train_config(spec: StudySpec) -> TrainConfig:
    """The local training the study's ``[training]`` and task ask for."""
    training = spec.training
    return TrainConfig(
        epochs=training.local_epochs or 1,
        steps=training.local_steps,
        batch_size=training.batch_size,
        lr=training.lr,
        optimizer=training.optimizer,
        momentum=training.momentum,
        task=spec.data.task,
    )


def compression_config(spec: StudySpec) -> CompressionConfig:
    """The block selection the study's ``[communication]`` asks for."""
    wire = spec.communication
    return CompressionConfig(
        method=wire.compression,
        fraction=wire.block_fraction if wire.block_fraction is not None else 1.0,
        seed=wire.compression_seed,
        error_feedback=wire.error_feedback,
    )
