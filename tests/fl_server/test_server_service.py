"""One job's service without HTTP, against a plaintext reference (decrypted with a key it never
sees)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.errors import (
    InvalidInputError,
    JobStateError,
    KeyEpochMismatchError,
    ServerBusyError,
    StateError,
    StorageError,
    TooStaleError,
    UpdateIdReusedError,
    VersionAheadError,
)
from fl_server.job_service import JobService
from fl_server.material import EpochContext, KeyauthMaterial
from fl_server.store import FileStore, LogRecord, MemoryStore
from hefl_wire import AccessClaims
from tests.fl_server.helpers import (
    JOB,
    Hospital,
    body_reader,
    client_claims,
    crash_image,
    job_record,
    make_settings,
    make_spec,
    push_update,
    report_metrics,
    start_job,
    wait_published,
)

pytestmark = pytest.mark.anyio

Values = npt.NDArray[np.float64]
MakeService = Callable[..., JobService]


@pytest.fixture
def make_service(make_job: MakeService) -> MakeService:
    return make_job


settle = wait_published


def model_of(service: JobService, hospital: Hospital) -> tuple[int, Values]:
    settle(service)
    return hospital.decrypt_model(service.snapshot().to_bytes())


def assert_close(actual: Values, expected: Values, profile: crypto.CkksProfile, n: int) -> None:
    assert np.max(np.abs(actual - expected)) <= profile.error_bound(n)


async def test_updates_are_added_with_their_staleness_weight(
    make_service: MakeService,
    hospital: Hospital,
    client: AccessClaims,
) -> None:
    # Prepare
    service = make_service(staleness="polynomial", staleness_a=0.5)
    initial = hospital.random_values(0, scale=0.5)
    await start_job(service, client, hospital, initial)
    reference = initial.copy()
    bases = [0, 0, 1, 0, 2]

    # Execute
    for k, base in enumerate(bases):
        values = hospital.random_values(k + 1)
        ack = await push_update(service, client, hospital.update(values, base_version=base)[1])
        tau = k - base
        assert (ack.receipt.version, ack.receipt.staleness) == (k + 1, tau)
        assert ack.receipt.weight == hospital.profile.applied_weight((1 + tau) ** -0.5)
        reference += ack.receipt.weight * values

    # Assert
    version, model = model_of(service, hospital)
    assert version == len(bases)
    assert_close(model, reference, hospital.profile, len(bases) + 1)
    status = service.status()
    assert status.job.updates_applied == len(bases)
    assert status.staleness_histogram == {0: 1, 1: 2, 2: 1, 3: 1}
    assert status.clients["client-a"].updates_applied == len(bases)


async def test_a_sparse_update_changes_only_its_blocks(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service()
    initial = hospital.random_values(0)
    await start_job(service, client, hospital, initial)
    before = service.snapshot()
    values = hospital.random_values(1)

    await push_update(service, client, hospital.update(values, base_version=0, indices=[1])[1])

    settle(service)
    after = service.snapshot()
    assert after.changed_since(0) == [1]
    assert after.changed_since(1) == []
    assert after.blocks[0] == before.blocks[0]
    assert after.blocks[2] == before.blocks[2]
    version, blocks = hospital.decrypt_blocks(after.to_bytes(since=0))
    assert version == 1
    assert list(blocks) == [1]
    assert_close(blocks[1], initial[1] + values[1], hospital.profile, 2)
    with pytest.raises(VersionAheadError):
        after.to_bytes(since=2)


async def test_buffered_updates_reach_the_model_every_k(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service(buffer_size=3, staleness="constant")
    initial = hospital.random_values(0)
    await start_job(service, client, hospital, initial)
    updates = [hospital.random_values(k) for k in (1, 2, 3)]

    first = await push_update(service, client, hospital.update(updates[0], base_version=0)[1])
    second = await push_update(service, client, hospital.update(updates[1], base_version=0)[1])
    version, model = model_of(service, hospital)
    assert (version, service.status().updates_buffered) == (0, 2)
    assert_close(model, initial, hospital.profile, 1)

    third = await push_update(service, client, hospital.update(updates[2], base_version=0)[1])

    assert [a.receipt.version for a in (first, second, third)] == [1, 1, 1]
    version, model = model_of(service, hospital)
    assert (version, service.status().updates_buffered) == (1, 0)
    assert_close(model, initial + sum(updates), hospital.profile, 4)


async def test_reaching_the_target_flushes_the_buffer_and_ends_the_job(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service(buffer_size=3, target_updates=2, staleness="constant")
    initial = hospital.random_values(0)
    await start_job(service, client, hospital, initial)
    updates = [hospital.random_values(k) for k in (1, 2)]
    pushed = [hospital.update(u, base_version=0) for u in updates]

    for _, envelope in pushed:
        await push_update(service, client, envelope)

    version, model = model_of(service, hospital)
    assert version == 1
    assert service.view().state == "done"
    assert_close(model, initial + sum(updates), hospital.profile, 3)
    with pytest.raises(JobStateError) as info:
        await push_update(service, client, hospital.update(updates[0], base_version=1)[1])
    assert info.value.code == "job_not_training"
    # A retry of an applied update still gets its answer once the job is done.
    assert (await push_update(service, client, pushed[1][1])).duplicate
    assert service.status().queued_updates == 0


async def test_a_retried_update_is_acknowledged_once_and_applied_once(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service()
    initial = hospital.random_values(0)
    await start_job(service, client, hospital, initial)
    values = hospital.random_values(1)
    _, envelope = hospital.update(values, base_version=0)

    first = await push_update(service, client, envelope)
    again = await push_update(service, client, envelope)

    assert not first.duplicate
    assert again.duplicate
    assert again.receipt == first.receipt
    version, model = model_of(service, hospital)
    assert version == 1
    assert_close(model, initial + values, hospital.profile, 2)
    assert service.status().duplicates == 1


async def test_an_update_id_reused_for_other_content_is_refused(
    make_service: MakeService,
    hospital: Hospital,
    client: AccessClaims,
    signing_key: Ed25519PrivateKey,
    material: KeyauthMaterial,
) -> None:
    service = make_service()
    await start_job(service, client, hospital, hospital.random_values(0))
    uid, envelope = hospital.update(hospital.random_values(1), base_version=0)
    await push_update(service, client, envelope)
    other = client_claims(material, signing_key, "client-b")

    with pytest.raises(UpdateIdReusedError):
        await push_update(
            service,
            client,
            hospital.update(hospital.random_values(2), base_version=0, update_id=uid)[1],
        )
    with pytest.raises(UpdateIdReusedError):
        await push_update(service, other, envelope)
    assert service.view().version == 1


async def test_too_stale_updates_are_refused_with_the_current_version(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service(max_staleness=2, staleness="constant")
    await start_job(service, client, hospital, hospital.random_values(0))
    for k in range(3):
        await push_update(
            service, client, hospital.update(hospital.random_values(k), base_version=k)[1]
        )
    before = (settle(service), service.snapshot())[1]

    with pytest.raises(TooStaleError) as info:
        await push_update(
            service, client, hospital.update(hospital.random_values(9), base_version=0)[1]
        )

    assert info.value.current_version == 3
    assert info.value.extra == {"current_version": 3}
    settle(service)
    assert service.snapshot() is before
    await push_update(
        service, client, hospital.update(hospital.random_values(9), base_version=1)[1]
    )


async def test_a_weight_that_quantizes_to_zero_is_too_stale(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    # (1 + 5) ** -3 * 2**6 < 0.5: nothing would be added at 6 weight bits.
    service = make_service(staleness="polynomial", staleness_a=3.0, max_staleness=64)
    await start_job(service, client, hospital, hospital.random_values(0))
    for k in range(5):
        await push_update(
            service, client, hospital.update(hospital.random_values(k), base_version=k)[1]
        )
    assert await push_update(
        service, client, hospital.update(hospital.random_values(8), base_version=1)[1]
    )

    with pytest.raises(TooStaleError):
        await push_update(
            service, client, hospital.update(hospital.random_values(9), base_version=0)[1]
        )


async def test_a_base_version_from_the_future_is_refused(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service()
    await start_job(service, client, hospital, hospital.random_values(0))
    with pytest.raises(VersionAheadError) as info:
        await push_update(
            service, client, hospital.update(hospital.random_values(1), base_version=1)[1]
        )
    assert info.value.current_version == 0


async def test_invalid_ciphertexts_leave_the_model_untouched(
    make_service: MakeService,
    hospital: Hospital,
    client: AccessClaims,
    layout: crypto.ModelLayout,
) -> None:
    service = make_service()
    await start_job(service, client, hospital, hospital.random_values(0))
    before = service.snapshot()
    cipher = hospital.cipher
    good = cipher.encrypt_update_block(hospital.random_values(1)[0])
    other_profile_keys = crypto.generate_key_material(crypto.DEFAULT_PROFILE)
    foreign = crypto.ClientCipher(other_profile_keys.secret_context, crypto.DEFAULT_PROFILE)

    def envelope(*blocks: bytes) -> bytes:
        update = crypto.EncryptedUpdate(
            layout.fingerprint,
            0,
            1,
            uuid.uuid4(),
            tuple(crypto.CipherBlock(i, b) for i, b in enumerate(blocks)),
        )
        return crypto.update_to_bytes(update)

    bad_inputs = {
        "model scale": envelope(good, cipher.encrypt_model_block([0.1])),
        "garbage": envelope(good, b"\x00" * 500),
        "other context": envelope(foreign.encrypt_update_block([0.1])),
        "truncated ciphertext": envelope(good, good[:-10]),
    }
    for what, data in bad_inputs.items():
        with pytest.raises(InvalidInputError) as info:
            await push_update(service, client, data)
        assert info.value.code == "ciphertext_invalid", what
        assert info.value.http_status == 422

    settle(service)
    assert service.snapshot() is before
    assert service.view().version == 0


async def test_envelope_checks_that_need_no_ciphertext(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service()
    await start_job(service, client, hospital, hospital.random_values(0))
    values = hospital.random_values(1)
    cases: dict[str, tuple[bytes, type[Exception]]] = {
        "envelope_truncated": (hospital.update(values, base_version=0)[1][:-7], InvalidInputError),
        "layout_mismatch": (
            hospital.update(values, base_version=0, fingerprint=b"\x01" * 32)[1],
            InvalidInputError,
        ),
        "key_epoch_mismatch": (
            hospital.update(values, base_version=0, key_epoch=2)[1],
            KeyEpochMismatchError,
        ),
    }
    for code, (data, error) in cases.items():
        with pytest.raises(error) as info:
            await push_update(service, client, data)
        assert getattr(info.value, "code", None) == code
    assert service.status().queued_updates == 0


async def test_admission_bounds_the_queue(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service(max_queued_updates=1)
    await start_job(service, client, hospital, hospital.random_values(0))
    envelopes = [hospital.update(hospital.random_values(k), base_version=0)[1] for k in (1, 2)]
    body_read = asyncio.Event()
    release = asyncio.Event()

    async def slow_body(limit: int) -> bytes:
        body_read.set()
        await release.wait()  # a client still sending its body holds its queue place
        return envelopes[0]

    first = asyncio.create_task(service.receive_update(client, slow_body))
    await body_read.wait()
    with pytest.raises(ServerBusyError) as info:
        await push_update(service, client, envelopes[1])
    assert info.value.http_status == 503
    release.set()
    await first
    await push_update(service, client, envelopes[1])


async def test_readers_only_ever_see_whole_versions(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    # Prepare: a stream of queued updates, read concurrently while the worker applies them.
    service = make_service(publish_max_lag=2, staleness="constant")
    initial = hospital.random_values(0)
    await start_job(service, client, hospital, initial)
    updates = [hospital.random_values(k) for k in range(1, 9)]
    envelopes = [hospital.update(u, base_version=0)[1] for u in updates]
    seen: dict[int, bytes] = {}
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            snapshot = service.snapshot()
            seen[snapshot.version] = snapshot.to_bytes()

    reader = threading.Thread(target=read)
    reader.start()

    # Execute
    # Each is admitted and queued in turn; all are answered once durable.
    await asyncio.gather(*(push_update(service, client, e) for e in envelopes))
    settle(service)
    stop.set()
    reader.join()
    final = service.snapshot()
    seen[final.version] = final.to_bytes()

    # Assert: every published model equals the reference at its version.
    assert max(seen) == len(updates)
    for version, data in seen.items():
        got_version, model = hospital.decrypt_model(data)
        assert got_version == version
        assert_close(
            model,
            initial + sum(updates[:version], np.zeros_like(initial)),
            hospital.profile,
            version + 1,
        )


async def test_restart_replays_the_log_after_the_checkpoint(
    make_service: MakeService, hospital: Hospital, client: AccessClaims, tmp_path: Path
) -> None:
    service = make_service(state_dir=tmp_path / "live", checkpoint_every=1000)
    initial = hospital.random_values(0)
    await start_job(service, client, hospital, initial)
    reference = initial.copy()
    pushed = []
    for k in range(4):
        values = hospital.random_values(k + 1)
        _, envelope = hospital.update(values, base_version=max(0, k - 1))
        reference += (await push_update(service, client, envelope)).receipt.weight * values
        pushed.append(envelope)
    settle(service)
    served = service.snapshot().to_bytes()

    image = crash_image(tmp_path / "live", tmp_path / "image")
    recovered = make_service(state_dir=image, checkpoint_every=1000)

    assert recovered.snapshot().to_bytes() == served
    version, model = model_of(recovered, hospital)
    assert version == 4
    assert_close(model, reference, hospital.profile, 5)
    again = await push_update(recovered, client, pushed[2])
    assert again.duplicate
    assert again.receipt.version == 3
    assert recovered.status().clients["client-a"].updates_applied == 4
    # The name comes from the log: the recovered server has not seen the client's token.
    assert recovered.status().clients["client-a"].client_name == "hospital-client-a"


async def test_restart_with_a_partly_filled_buffer(
    make_service: MakeService, hospital: Hospital, client: AccessClaims, tmp_path: Path
) -> None:
    service = make_service(
        state_dir=tmp_path / "live", buffer_size=2, checkpoint_every=1, staleness="constant"
    )
    initial = hospital.random_values(0)
    await start_job(service, client, hospital, initial)
    updates = [hospital.random_values(k) for k in (1, 2, 3, 4)]
    for values in updates[:3]:
        await push_update(service, client, hospital.update(values, base_version=0)[1])
    settle(service)

    recovered = make_service(
        state_dir=crash_image(tmp_path / "live", tmp_path / "image"), buffer_size=2
    )
    assert (recovered.view().version, recovered.status().updates_buffered) == (1, 1)
    await push_update(recovered, client, hospital.update(updates[3], base_version=1)[1])

    version, model = model_of(recovered, hospital)
    assert version == 2
    assert_close(model, initial + sum(updates), hospital.profile, 5)


async def test_close_checkpoints_so_the_next_start_replays_nothing(
    make_service: MakeService, hospital: Hospital, client: AccessClaims, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    service = make_service(state_dir=state_dir, checkpoint_every=1000)
    await start_job(service, client, hospital, hospital.random_values(0))
    await push_update(
        service, client, hospital.update(hospital.random_values(1), base_version=0)[1]
    )
    settle(service)
    served = service.snapshot().to_bytes()
    service.close()

    store = FileStore(state_dir / "jobs" / JOB)
    checkpoint = store.load_checkpoint()
    assert checkpoint is not None
    assert checkpoint.seq == 1
    assert list(store.read_updates(checkpoint.seq)) == []  # the log beyond it: kept for repairs
    store.close()
    restarted = make_service(state_dir=state_dir)
    assert restarted.snapshot().to_bytes() == served
    assert restarted.status().clients["client-a"].client_name == "hospital-client-a"


class FailingStore(MemoryStore):
    def append_updates(self, records: Sequence[LogRecord]) -> None:
        raise OSError(28, "No space left on device")


async def test_a_failed_log_write_is_never_acknowledged_or_served(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service(store=FailingStore())
    await start_job(service, client, hospital, hospital.random_values(0))
    before = service.snapshot()

    with pytest.raises(StorageError):
        await push_update(
            service, client, hospital.update(hospital.random_values(1), base_version=0)[1]
        )

    time.sleep(0.3)  # well past the pause after which the worker would publish
    assert service.snapshot() is before
    with pytest.raises(StorageError) as info:
        await push_update(
            service, client, hospital.update(hospital.random_values(2), base_version=0)[1]
        )
    assert info.value.http_status == 503


def test_the_server_refuses_a_context_with_a_secret_key(
    material: KeyauthMaterial, keys: crypto.KeyMaterial, tmp_path: Path
) -> None:
    record = job_record(make_spec(), material)
    secret = EpochContext(material.key_epoch, material.profile, keys.secret_context)
    with pytest.raises(crypto.ContextError, match="secret key"):
        JobService(make_settings(tmp_path), record, secret, store=MemoryStore())


def test_a_job_is_never_opened_with_another_key_epochs_context(
    material: KeyauthMaterial, tmp_path: Path
) -> None:
    record = job_record(make_spec(), material)
    other = EpochContext(2, material.profile, material.public_context)
    with pytest.raises(StateError, match="key epoch 1"):
        JobService(make_settings(tmp_path), record, other, store=MemoryStore())


async def test_initial_model_must_be_whole_version_zero_at_model_scale(
    make_service: MakeService, hospital: Hospital, client: AccessClaims
) -> None:
    service = make_service()
    values = hospital.random_values(0)
    with pytest.raises(JobStateError):
        await service.receive_initial_model(client, body_reader(hospital.initial_model(values)))
    await service.receive_layout(client, body_reader(hospital.layout.to_json()))
    whole = hospital.initial_model(values)
    partial = crypto.model_to_bytes(
        replace(crypto.model_from_bytes(whole, crypto.EnvelopeLimits(3, 10**6)), blocks=())
    )
    update_scale = crypto.model_to_bytes(
        crypto.EncryptedModel(
            hospital.layout.fingerprint,
            0,
            1,
            tuple(
                crypto.CipherBlock(i, hospital.cipher.encrypt_update_block(v))
                for i, v in enumerate(values)
            ),
        )
    )
    for data, code in [
        (hospital.initial_model(values, version=3), "initial_model_incomplete"),
        (partial, "initial_model_incomplete"),
        (update_scale, "ciphertext_invalid"),
    ]:
        with pytest.raises((InvalidInputError, Exception)) as info:
            await service.receive_initial_model(client, body_reader(data))
        assert getattr(info.value, "code", None) == code
    assert service.view().state == "waiting_for_initial_model"
    started = await service.receive_initial_model(client, body_reader(whole))
    assert started.state == service.view().state == "training"


async def test_metrics_reports_are_kept_per_version(
    make_service: MakeService,
    hospital: Hospital,
    client: AccessClaims,
    signing_key: Ed25519PrivateKey,
    material: KeyauthMaterial,
) -> None:
    service = make_service()
    await start_job(service, client, hospital, hospital.random_values(0))
    other = client_claims(material, signing_key, "client-b")

    await report_metrics(service, client, 0, {"loss": 1.0, "accuracy": 0.5, "n_samples": 100})
    await report_metrics(service, other, 0, {"loss": 0.4, "accuracy": 0.8, "n_samples": 300})

    (summary,) = service.status().metrics
    assert (summary.version, summary.reports, summary.n_samples) == (0, 2, 400)
    assert summary.mean == pytest.approx({"loss": 0.55, "accuracy": 0.725})
    with pytest.raises(VersionAheadError):
        await report_metrics(service, client, 1, {"loss": 1.0})


async def test_a_forgotten_receipt_never_lets_an_update_apply_twice(
    make_service: MakeService,
    hospital: Hospital,
    client: AccessClaims,
    signing_key: Ed25519PrivateKey,
    tmp_path: Path,
    material: KeyauthMaterial,
) -> None:
    # Prepare: client-a sends 9 updates (one more than it keeps receipts for), then
    # client-b moves the model far past their staleness window.
    state_dir = tmp_path / "state"
    service = make_service(state_dir=state_dir, max_staleness=2, staleness="constant")
    zero = np.zeros(hospital.shape)
    await start_job(service, client, hospital, zero)
    other = client_claims(material, signing_key, "client-b")
    sent = []
    for k in range(9):
        values = hospital.random_values(k + 1)
        sent.append((values, hospital.update(values, base_version=k)[1]))
    first = [await push_update(service, client, envelope) for _, envelope in sent]
    for k in range(9, 20):
        await push_update(service, other, hospital.update(zero, base_version=k)[1])
    expected = np.sum([values for values, _ in sent], axis=0)

    # Execute / Assert: the newest 8 resends get their first receipts; the oldest one,
    # forgotten, is refused and not applied again, also after a restart with a larger
    # max_staleness that would otherwise admit it.
    for (_, envelope), ack in zip(sent[1:], first[1:], strict=True):
        again = await push_update(service, client, envelope)
        assert again.duplicate
        assert again.receipt == ack.receipt
    with pytest.raises(TooStaleError):
        await push_update(service, client, sent[0][1])
    service.close()
    restarted = make_service(state_dir=state_dir, max_staleness=64, staleness="constant")
    with pytest.raises(TooStaleError, match="no longer keeps the receipts"):
        await push_update(restarted, client, sent[0][1])
    assert (await push_update(restarted, client, sent[8][1])).receipt == first[8].receipt
    version, model = model_of(restarted, hospital)
    assert version == 20
    assert_close(model, expected, hospital.profile, 21)
    assert restarted.status().job.updates_applied == 20


async def test_the_ledger_stays_bounded_under_a_stream_of_updates(
    make_service: MakeService,
    hospital: Hospital,
    signing_key: Ed25519PrivateKey,
    material: KeyauthMaterial,
) -> None:
    service = make_service(max_staleness=4, staleness="constant", buffer_size=2)
    zero = np.zeros(hospital.shape)
    clients = [client_claims(material, signing_key, f"client-{i}") for i in range(3)]
    await start_job(service, clients[0], hospital, zero)

    for k in range(120):
        version = service.view().version
        await push_update(
            service, clients[k % 3], hospital.update(zero, base_version=version, indices=[0])[1]
        )

    # Inside the window: (max_staleness + 2) versions of buffer_size updates; beyond it,
    # at most 8 per client.
    assert 8 * 3 <= service.status().receipts_kept <= (4 + 2) * 2 + 8 * 3
    assert service.status().job.updates_applied == 120
