"""The round policy and the declared rows, on one job's service against a plaintext reference."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
import hefl_study
from fl_server.domain import UpdateAck
from fl_server.errors import RoundFullError, RoundWaitingError, SamplesInvalidError
from fl_server.job_service import JobService
from fl_server.material import KeyauthMaterial
from fl_server.rounds import round_weights
from fl_server.store import FileStore, UpdateRecord
from hefl_wire import AccessClaims
from tests.fl_server.helpers import (
    JOB,
    Hospital,
    body_reader,
    client_claims,
    crash_image,
    job_record,
    open_job,
    start_job,
    wait_published,
)

pytestmark = pytest.mark.anyio

Values = npt.NDArray[np.float64]
MakeService = Callable[..., JobService]
ROWS = {"client-a": 200, "client-b": 150, "client-c": 30}


@pytest.fixture
def clients(material: KeyauthMaterial, signing_key: Ed25519PrivateKey) -> list[AccessClaims]:
    return [client_claims(material, signing_key, cid) for cid in ROWS]


async def send(
    service: JobService, client: AccessClaims, envelope: bytes, samples: str | None
) -> UpdateAck:
    """``POST .../updates`` with ``X-Hefl-Samples: samples``."""
    return await service.receive_update(client, body_reader(envelope), samples=samples)


def model_of(service: JobService, hospital: Hospital) -> tuple[int, Values]:
    wait_published(service)
    return hospital.decrypt_model(service.snapshot().to_bytes())


def logged_updates(state_dir: Path) -> list[UpdateRecord]:
    """The update records of a copy of a job's log."""
    store = FileStore(state_dir / "jobs" / JOB)
    try:
        return [r for r in store.read_log() if isinstance(r, UpdateRecord)]
    finally:
        store.close()


def close_to(actual: Values, expected: Values, profile: crypto.CkksProfile, n: int) -> bool:
    return bool(np.max(np.abs(actual - expected)) <= profile.error_bound(n))


async def test_a_round_is_added_when_it_closes_with_fedavg_weights(
    make_job: MakeService, hospital: Hospital, clients: list[AccessClaims]
) -> None:
    # Prepare
    service = make_job(policy="rounds", round_clients=3)
    initial = hospital.random_values(0)
    await start_job(service, clients[0], hospital, initial)
    values = [hospital.random_values(k + 1) for k in range(3)]

    # Execute: two of three in; the model has not moved
    envelopes = [hospital.update(v, base_version=0)[1] for v in values]
    acks = []
    for client, envelope in zip(clients[:2], envelopes, strict=False):
        service.acquire_slot(client)
        acks.append(await send(service, client, envelope, str(ROWS[client.client_id])))
    before = model_of(service, hospital)
    service.acquire_slot(clients[2])
    last = await send(service, clients[2], envelopes[2], "30")

    # Assert
    assert before[0] == 0
    assert close_to(before[1], initial, hospital.profile, 1)
    weights = round_weights(list(ROWS.values()), hospital.profile)
    assert last.receipt.weight == weights[2]
    version, model = model_of(service, hospital)
    assert version == 1
    expected = initial + sum(w * v for w, v in zip(weights, values, strict=True))
    assert close_to(model, expected, hospital.profile, 4)
    # the applied weights are what the status and a resend answer
    resent = await send(service, clients[0], envelopes[0], "200")
    assert resent.duplicate
    assert resent.receipt.weight == weights[0]
    policy = service.status().server_policy
    assert policy["policy"] == "rounds"
    assert policy["round"]["round"] == 1
    assert policy["round"]["contributors"] == []


async def test_a_hospital_in_the_open_round_waits_and_a_full_round_takes_no_other(
    make_job: MakeService, hospital: Hospital, clients: list[AccessClaims]
) -> None:
    service = make_job(policy="rounds", round_clients=2)
    await start_job(service, clients[0], hospital, hospital.random_values(0))
    service.acquire_slot(clients[0])
    service.acquire_slot(clients[1])

    with pytest.raises(RoundFullError):
        service.acquire_slot(clients[2])
    await send(
        service, clients[0], hospital.update(hospital.random_values(1), base_version=0)[1], "200"
    )
    with pytest.raises(RoundWaitingError) as waiting:
        service.acquire_slot(clients[0])
    with pytest.raises(RoundWaitingError):  # and an update sent without asking
        await send(
            service,
            clients[0],
            hospital.update(hospital.random_values(2), base_version=0)[1],
            "200",
        )
    await send(
        service, clients[1], hospital.update(hospital.random_values(3), base_version=0)[1], "150"
    )
    wait_published(service)

    assert waiting.value.http_status == 429
    assert waiting.value.headers["Retry-After"] == "1"
    assert service.status().server_policy["round"]["contributors"] == []
    service.acquire_slot(clients[0])  # the next round
    assert service.status().server_policy["round"]["round"] == 1


async def test_a_kill_in_an_open_round_loses_nothing_and_weighs_the_same(
    make_job: MakeService, hospital: Hospital, clients: list[AccessClaims], tmp_path: Path
) -> None:
    # Prepare: one round closed, the next with two of three updates in
    service = make_job(
        state_dir=tmp_path / "live", policy="rounds", round_clients=3, checkpoint_every=1
    )
    initial = hospital.random_values(0)
    await start_job(service, clients[0], hospital, initial)
    values = [hospital.random_values(k + 1) for k in range(6)]
    for client, v in zip(clients, values[:3], strict=True):
        await send(
            service, client, hospital.update(v, base_version=0)[1], str(ROWS[client.client_id])
        )
    for client, v in zip(clients[:2], values[3:5], strict=True):
        await send(
            service, client, hospital.update(v, base_version=1)[1], str(ROWS[client.client_id])
        )
    wait_published(service)

    # Execute: what a kill -9 leaves, reopened; the round's last update
    recovered = make_job(state_dir=crash_image(tmp_path / "live", tmp_path / "image"))
    assert recovered.status().server_policy["round"]["contributors"] == ["client-a", "client-b"]
    with pytest.raises(RoundWaitingError):
        recovered.acquire_slot(clients[0])
    await send(recovered, clients[2], hospital.update(values[5], base_version=1)[1], "30")

    # Assert
    weights = round_weights(list(ROWS.values()), hospital.profile)
    expected = initial + sum(
        w * (a + b) for w, a, b in zip(weights, values[:3], values[3:], strict=True)
    )
    version, model = model_of(recovered, hospital)
    assert version == 2
    assert close_to(model, expected, hospital.profile, 7)
    logged = logged_updates(crash_image(tmp_path / "image", tmp_path / "after"))
    assert [r.samples for r in logged] == [200, 150, 30, 200, 150, 30]
    assert all(r.deferred for r in logged)


async def test_the_declared_rows_are_logged_and_weigh_async_updates(
    make_job: MakeService, hospital: Hospital, clients: list[AccessClaims], tmp_path: Path
) -> None:
    service = make_job(state_dir=tmp_path / "live", schedule="constant", staleness="constant")
    await start_job(service, clients[0], hospital, hospital.random_values(0))
    big = await send(
        service, clients[0], hospital.update(hospital.random_values(1), base_version=0)[1], "200"
    )
    small = await send(
        service, clients[2], hospital.update(hospital.random_values(2), base_version=1)[1], "30"
    )
    wait_published(service)

    # the first update counts fully (alone, it is all the data); the small site's its share
    assert big.receipt.weight == 1.0
    assert 0 < small.receipt.weight < 0.25
    logged = logged_updates(crash_image(tmp_path / "live", tmp_path / "image"))
    assert [(r.samples, r.weight) for r in logged] == [(200, 1.0), (30, small.receipt.weight)]


@pytest.mark.parametrize("header", ["0", "-3", "1e3", "abc", "12345678901", " "])
async def test_an_invalid_sample_count_is_refused(
    make_job: MakeService, hospital: Hospital, clients: list[AccessClaims], header: str
) -> None:
    service = make_job()
    await start_job(service, clients[0], hospital, hospital.random_values(0))

    with pytest.raises(SamplesInvalidError) as refused:
        await send(
            service,
            clients[0],
            hospital.update(hospital.random_values(1), base_version=0)[1],
            header,
        )

    assert refused.value.http_status == 422
    assert service.view().version == 0


# The canonical JSON a job of tests.fl_server.helpers.spec_mapping() had before format 2:
# its hash must not change, and the job keeps its uniform, constant-step async weighting.
FORMAT_1 = (
    '{"communication":{"block_fraction":null,"compression":"dense","compression_seed":0,'
    '"error_feedback":true,"personal":[]},"data":{"classes":["0","1"],"features":[],'
    '"ignore":[],"input_shape":[5],"label":null,"min_rows":10,"missing":"error",'
    '"missing_values":["","NA","NaN","?"],"split_seed":0,"standardize":true,"task":"binary",'
    '"test_fraction":0.34},"description":"the study study","format":1,"model":{"args":{},'
    '"factory":null,"name":"logistic","seed":0},"name":"study","profile":"test-n2048",'
    '"server":{"buffer_size":1,"max_staleness":64,"max_training":32,"mixing":1.0,'
    '"staleness":"polynomial","staleness_a":0.5,"staleness_b":null},"stop":{'
    '"max_wall_seconds":null,"metric":null,"min_sites":2,"target_updates":1000,"value":null},'
    '"training":{"batch_size":16,"client_step":1.0,"local_epochs":1,"local_steps":null,'
    '"lr":0.05,"momentum":0.0,"optimizer":"sgd"}}'
)
FORMAT_1_SHA256 = "a4f6242a15149e7bc466d9e8b34d4e40f0930ff98980445a5506bd2bd658a195"


async def test_a_job_created_before_format_2_still_opens_as_it_was(
    material: KeyauthMaterial, hospital: Hospital, clients: list[AccessClaims], tmp_path: Path
) -> None:
    # Prepare: the job's directory as the server before format 2 left it
    spec = hefl_study.spec_from_json(FORMAT_1)
    assert hashlib.sha256(FORMAT_1.encode()).hexdigest() == FORMAT_1_SHA256
    directory = tmp_path / "jobs" / JOB
    store = FileStore(directory)
    store.save_job(job_record(spec, material))
    store.close()

    # Execute
    service = open_job(material, tmp_path)
    try:
        await start_job(service, clients[0], hospital, hospital.random_values(0))
        await send(
            service, clients[0], hospital.update(hospital.random_values(1), base_version=0)[1], None
        )
        ack = await send(
            service, clients[2], hospital.update(hospital.random_values(2), base_version=0)[1], "30"
        )

        # Assert: the hash and the canonical JSON a client checks, and the old weights
        assert spec.sha256 == FORMAT_1_SHA256
        assert service.spec_json() == FORMAT_1
        assert ack.receipt.weight == hospital.profile.applied_weight(2**-0.5)
        assert service.status().server_policy["weighting"]["kind"] == "uniform"
    finally:
        service.close()
