"""Key rotation of a running job: the state machine, the swap, refusals, timeouts, crashes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.domain import BodyReader
from fl_server.errors import (
    JobNotStartedError,
    JobRotatingError,
    KeyEpochMismatchError,
    RotationNotOfferedError,
    RotationRefusedError,
    StorageError,
    VersionAheadError,
)
from fl_server.job_service import JobService
from fl_server.material import EpochContext, KeyauthMaterial
from fl_server.store import FileStore, read_job_file
from fl_server.store._wal import WriteAheadLog
from hefl_wire import AccessClaims, key_id_of
from tests.fl_server.conftest import MakeJob
from tests.fl_server.helpers import (
    JOB,
    Hospital,
    body_reader,
    client_claims,
    crash_image,
    open_job,
    push_update,
    start_job,
    wait_published,
)

pytestmark = pytest.mark.anyio

NEW_EPOCH = 2


@pytest.fixture(scope="module")
def new_keys(profile: crypto.CkksProfile) -> crypto.KeyMaterial:
    return crypto.generate_key_material(profile)


@pytest.fixture(scope="module")
def new_hospital(
    new_keys: crypto.KeyMaterial, profile: crypto.CkksProfile, layout: crypto.ModelLayout
) -> Hospital:
    return Hospital(crypto.ClientCipher(new_keys.secret_context, profile), layout, NEW_EPOCH)


@pytest.fixture(scope="module")
def target(new_keys: crypto.KeyMaterial, material: KeyauthMaterial) -> EpochContext:
    """keyauth's next key epoch, as its material source gives it."""
    return EpochContext(
        NEW_EPOCH, material.profile, new_keys.public_context, key_id_of(new_keys.secret_context)
    )


@pytest.fixture
def client_b(material: KeyauthMaterial, signing_key: Ed25519PrivateKey) -> AccessClaims:
    return client_claims(material, signing_key, "client-b")


def never_revoked(_: str) -> bool:
    return False


def reencrypt(job: JobService, old: Hospital, new: Hospital) -> tuple[bytes, npt.NDArray[Any]]:
    """What the hospital asked does: pull the model, decrypt it with the old key, encrypt
    it with the new one at the same version."""
    wait_published(job)
    version, values = old.decrypt_model(job.snapshot().to_bytes(None))
    return new.initial_model(values, version=version), values


def max_error(hospital: Hospital, job: JobService, expected: npt.NDArray[Any]) -> float:
    wait_published(job)
    _, values = hospital.decrypt_model(job.snapshot().to_bytes(None))
    return float(np.max(np.abs(values - expected)))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_rotation_flushes_the_buffer_swaps_the_model_and_refuses_old_updates(
    make_job: MakeJob,
    tmp_path: Path,
    material: KeyauthMaterial,
    client: AccessClaims,
    hospital: Hospital,
    new_hospital: Hospital,
    target: EpochContext,
) -> None:
    # Prepare: three updates with a buffer of 2, the third still buffered
    job = make_job(buffer_size=2)
    await start_job(job, client, hospital)
    for seed in range(3):
        _, envelope = hospital.update(hospital.model_values(seed), base_version=job.view().version)
        await push_update(job, client, envelope)
    assert job.status().updates_buffered == 1

    # Execute: rotate
    view = await job.rotate(target, never_revoked)

    # Assert: the buffer is in the model, the model frozen, this hospital asked
    assert view.rotation is not None
    assert (view.rotation.client_id, view.rotation.version) == ("client-a", 2)
    assert (view.rotation.key_epoch, view.rotation.key_id) == (NEW_EPOCH, target.key_id)
    assert view.key_epoch == 1
    assert job.status().updates_buffered == 0
    _, stale = hospital.update(hospital.model_values(7), base_version=2)
    with pytest.raises(JobRotatingError):
        await push_update(job, client, stale)

    body, values = reencrypt(job, hospital, new_hospital)
    rotated = await job.receive_rotated_model(client, _reader(body))

    assert (rotated.key_epoch, rotated.key_id, rotated.version) == (NEW_EPOCH, target.key_id, 3)
    assert rotated.rotation is None
    with pytest.raises(KeyEpochMismatchError):
        await push_update(job, client, stale)
    status = job.status()
    assert status.rotations.updates_retrained == 2
    (done,) = status.rotations.done
    assert (done.from_epoch, done.to_epoch, done.version, done.client_id) == (1, 2, 3, "client-a")
    # the new key reads the model; the old one reads garbage
    assert max_error(new_hospital, job, values) < 1e-3
    _, garbage = hospital.decrypt_model(job.snapshot().to_bytes(None))
    assert not hospital.check(garbage)[0]

    # training goes on under the new epoch, and survives a restart
    _, fresh = new_hospital.update(new_hospital.model_values(9), base_version=3)
    assert (await push_update(job, client, fresh)).receipt.version == 4
    job.close()
    reopened = open_job(_epoch_2(material, target), tmp_path / "state", buffer_size=2)
    try:
        view = reopened.view()
        assert (view.key_epoch, view.key_id, view.version) == (NEW_EPOCH, target.key_id, 3)
        # buffer_size 2: the fresh update is logged and buffered again, not lost
        assert reopened.status().updates_buffered == 1
        assert reopened.status().rotations.done == (done,)
    finally:
        reopened.close()


async def test_rotation_is_refused_when_it_cannot_happen(
    make_job: MakeJob,
    client: AccessClaims,
    hospital: Hospital,
    target: EpochContext,
    material: KeyauthMaterial,
) -> None:
    job = make_job()
    with pytest.raises(JobNotStartedError):
        await job.rotate(target, never_revoked)
    await start_job(job, client, hospital)
    same = EpochContext(1, material.profile, material.public_context, material.key_id)
    with pytest.raises(RotationRefusedError, match="epochs rotate"):
        await job.rotate(same, never_revoked)
    with pytest.raises(RotationRefusedError, match="no hospital"):
        await job.rotate(target, lambda client_id: True)  # the only one seen is revoked
    assert job.view().rotation is None
    # nothing changed: training goes on
    _, envelope = hospital.update(hospital.model_values(1), base_version=0)
    assert (await push_update(job, client, envelope)).receipt.version == 1


async def test_a_hospital_that_does_not_answer_is_passed_over_then_the_rotation_ends(
    make_job: MakeJob,
    client: AccessClaims,
    client_b: AccessClaims,
    hospital: Hospital,
    new_hospital: Hospital,
    target: EpochContext,
) -> None:
    clock = Clock()
    job = make_job(clock=clock, rotation_timeout=30)
    await start_job(job, client, hospital)
    clock.now += 1
    job.layout_json(client_b)  # client-b is seen last: asked first

    view = await job.rotate(target, never_revoked)
    assert view.rotation is not None
    assert view.rotation.client_id == "client-b"
    body, _ = reencrypt(job, hospital, new_hospital)
    with pytest.raises(RotationNotOfferedError):
        await job.receive_rotated_model(client, _reader(body))

    clock.now += 31
    job.tick().result()
    assert job.view().rotation.client_id == "client-a"  # type: ignore[union-attr]
    with pytest.raises(RotationNotOfferedError):
        await job.receive_rotated_model(client_b, _reader(body))

    clock.now += 31
    job.tick().result()
    status = job.status()
    assert status.job.rotation is None
    assert status.job.key_epoch == 1
    assert status.rotations.asked == ("client-b", "client-a")
    assert status.rotations.detail is not None
    assert "no hospital re-encrypted" in status.rotations.detail
    _, envelope = hospital.update(hospital.model_values(1), base_version=0)
    assert (await push_update(job, client, envelope)).receipt.version == 1


async def test_a_reencrypted_model_of_another_version_or_epoch_is_refused(
    make_job: MakeJob,
    client: AccessClaims,
    hospital: Hospital,
    new_hospital: Hospital,
    target: EpochContext,
) -> None:
    job = make_job()
    await start_job(job, client, hospital)
    await job.rotate(target, never_revoked)
    _, values = hospital.decrypt_model(job.snapshot().to_bytes(None))
    with pytest.raises(VersionAheadError):
        await job.receive_rotated_model(
            client, _reader(new_hospital.initial_model(values, version=5))
        )
    with pytest.raises(KeyEpochMismatchError):
        await job.receive_rotated_model(client, _reader(hospital.initial_model(values)))
    assert job.view().rotation is not None
    assert job.view().key_epoch == 1


@pytest.mark.parametrize(
    ("crash_at", "epoch_after"),
    [
        ("rotation file", 1),  # the re-encrypted model written, job.json not yet
        ("job.json", 2),  # the commit point passed, the checkpoint not yet in place
        ("log", 2),  # the checkpoint in place, the old log not yet dropped
    ],
)
async def test_a_crash_during_the_swap_recovers_to_the_old_or_the_new_epoch_never_a_mix(
    crash_at: str,
    epoch_after: int,
    make_job: MakeJob,
    tmp_path: Path,
    material: KeyauthMaterial,
    client: AccessClaims,
    hospital: Hospital,
    new_hospital: Hospital,
    target: EpochContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: two updates, rotation asked, the re-encrypted model ready
    job = make_job()
    await start_job(job, client, hospital)
    for seed in range(2):
        _, envelope = hospital.update(hospital.model_values(seed), base_version=job.view().version)
        await push_update(job, client, envelope)
    await job.rotate(target, never_revoked)
    body, values = reencrypt(job, hospital, new_hospital)

    # Execute: the process dies at ``crash_at`` (the write after it never happens)
    def crash(*_: Any, **__: Any) -> None:
        raise OSError("killed")

    if crash_at == "rotation file":
        monkeypatch.setattr(FileStore, "save_job", crash)
    elif crash_at == "job.json":
        monkeypatch.setattr(FileStore, "_install_rotated", crash)
    else:
        monkeypatch.setattr(WriteAheadLog, "drop_through", crash)
    with pytest.raises(StorageError):
        await job.receive_rotated_model(client, _reader(body))
    monkeypatch.undo()
    image = crash_image(tmp_path / "state", tmp_path / "image")

    # Assert: the job reopens wholly on one epoch, its model readable with that epoch's key
    record = read_job_file(image / "jobs" / JOB)
    assert record is not None
    assert record.key_epoch == epoch_after
    opened_material = material if epoch_after == 1 else _epoch_2(material, target)
    reopened = open_job(opened_material, image)
    try:
        view = reopened.view()
        keys = hospital if epoch_after == 1 else new_hospital
        other = new_hospital if epoch_after == 1 else hospital
        assert view.key_epoch == epoch_after
        assert view.version == (2 if epoch_after == 1 else 3)
        assert max_error(keys, reopened, values) < 1e-3
        _, garbage = other.decrypt_model(reopened.snapshot().to_bytes(None))
        assert not other.check(garbage)[0]
        assert not list((image / "jobs" / JOB).glob("rotation-*.bin"))
        # and it trains on under that epoch
        _, envelope = keys.update(keys.model_values(5), base_version=view.version)
        assert (await push_update(reopened, client, envelope)).receipt.version == view.version + 1
    finally:
        reopened.close()


def _epoch_2(material: KeyauthMaterial, target: EpochContext) -> KeyauthMaterial:
    return dataclasses.replace(material, key_epoch=NEW_EPOCH, key_id=target.key_id)


def _reader(body: bytes) -> BodyReader:
    return body_reader(body)


async def test_a_revoked_hospital_is_never_asked_to_reencrypt(
    make_job: MakeJob,
    client: AccessClaims,
    client_b: AccessClaims,
    hospital: Hospital,
    target: EpochContext,
) -> None:
    clock = Clock()
    job = make_job(clock=clock)
    await start_job(job, client, hospital)
    clock.now += 1
    job.layout_json(client_b)  # seen last, but revoked

    view = await job.rotate(target, lambda client_id: client_id == "client-b")

    assert view.rotation is not None
    assert view.rotation.client_id == "client-a"
    assert job.status().rotations.asked == ("client-a",)
