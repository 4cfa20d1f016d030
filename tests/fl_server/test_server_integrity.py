"""A corrupted update is located by clients' checks of aggregates and removed exactly.

The test hospital encrypts honest updates and corrupted ones the server cannot tell from
them (a flipped bit, a block under another key authority's key); it checks every model
it decrypts as a client does and answers the server's probes. The repaired model is
compared with the model the same ciphertexts make without the bad update, at the same
weights: bit for bit, and decrypted within 1e-6.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.domain import IntegrityState, ProbeOutcome
from fl_server.errors import (
    ClientNotQuarantinedError,
    ClientQuarantinedError,
    ProbeNotOfferedError,
    RepairWindowExceededError,
    StorageError,
    UpdateNotFoundError,
)
from fl_server.job_service import JobService
from fl_server.material import KeyauthMaterial
from fl_server.state import ModelState
from fl_server.store import FileStore, RepairRecord
from hefl_wire import AccessClaims
from tests.fl_server.helpers import (
    JOB,
    Hospital,
    body_reader,
    client_claims,
    crash_image,
    push_update,
    report_metrics,
    wait_published,
)

pytestmark = pytest.mark.anyio

MakeJob = Callable[..., JobService]


@pytest.fixture(scope="session")
def server(keys: crypto.KeyMaterial, profile: crypto.CkksProfile) -> crypto.ServerCipher:
    return crypto.ServerCipher(keys.public_context, profile)


@pytest.fixture(scope="session")
def other_key(profile: crypto.CkksProfile) -> crypto.ClientCipher:
    """A key of the same profile from another key authority."""
    return crypto.ClientCipher(crypto.generate_key_material(profile).secret_context, profile)


@pytest.fixture
def clients(material: KeyauthMaterial, signing_key: Ed25519PrivateKey) -> dict[str, AccessClaims]:
    return {
        c: client_claims(material, signing_key, c) for c in ("client-a", "client-b", "client-c")
    }


@dataclass
class Study:
    """A job in training and what the test needs to check it: the honest updates."""

    job: JobService
    hospital: Hospital
    clients: dict[str, AccessClaims]
    initial: bytes
    honest: list[tuple[bytes, float]]

    def client(self, name: str) -> AccessClaims:
        return self.clients[f"client-{name}"]

    async def push(self, name: str, envelope: bytes, *, honest: bool = True) -> float:
        ack = await push_update(self.job, self.client(name), envelope)
        if honest:
            self.honest.append((envelope, ack.receipt.weight))
        return ack.receipt.weight

    async def honest_update(self, name: str, seed: int, base_version: int) -> uuid.UUID:
        update_id, envelope = self.hospital.update(
            self.hospital.model_values(seed), base_version=base_version
        )
        await self.push(name, envelope)
        return update_id


async def start_study(
    make_job: MakeJob, hospital: Hospital, clients: dict[str, AccessClaims], **overrides: object
) -> Study:
    # uniform weighting: every update of these studies counts 1, which their expected
    # repairs spell out (the weights a repair subtracts are checked, not how they arise)
    job = make_job(**{"weighting": "uniform", **overrides})
    initial = hospital.initial_model(hospital.model_values(0, scale=0.3))
    client = clients["client-a"]
    await job.receive_layout(client, body_reader(hospital.layout.to_json()))
    await job.receive_initial_model(client, body_reader(initial))
    return Study(job, hospital, clients, initial, [])


async def report(
    job: JobService,
    client: AccessClaims,
    version: int,
    ok: bool,
    check: str | None = None,
    update_id: str | None = None,
) -> IntegrityState:
    body: dict[str, object] = {
        "version": version,
        "ok": ok,
        "check": check,
        "blocks": [],
        "update_id": update_id,
    }
    return await job.receive_integrity(client, body_reader(json.dumps(body).encode()))


async def check_served(study: Study, name: str) -> tuple[int, bool]:
    """A client pulls the model, checks it and reports; the version and whether it was good."""
    wait_published(study.job)
    version, values = study.hospital.decrypt_model(study.job.snapshot().to_bytes())
    ok, check = study.hospital.check(values)
    await report(study.job, study.client(name), version, ok, check)
    return version, ok


async def answer_probes(
    study: Study, *, silent: Sequence[str] = ()
) -> list[tuple[int, str | None, bool]]:
    """Every client answers the probes offered to it, as fl_client does, until none is left
    (or only one to a ``silent`` client); what was asked and answered."""
    answered = []
    while (probe := study.job.view().integrity.probe) is not None:
        client_id = probe.client_id or "client-a"
        if client_id in silent:
            break
        client = study.clients[client_id]
        update = uuid.UUID(probe.update_id) if probe.update_id else None
        download = study.job.download_model(
            client, None, None, version=probe.version, update_id=update
        )
        assert isinstance(download.body, bytes)  # a probe's model is one body, not streamed
        version, values = study.hospital.decrypt_model(download.body)
        assert version == probe.version
        ok, check = study.hospital.check(values)
        await report(study.job, client, probe.version, ok, check, probe.update_id)
        answered.append((probe.version, probe.update_id, ok))
    return answered


def reference_blocks(study: Study, server: crypto.ServerCipher) -> list[bytes]:
    """The model the honest updates make, at the weights they were applied at."""
    layout = study.hospital.layout
    limits = crypto.EnvelopeLimits(layout.n_blocks, server.profile.max_block_bytes)
    model = crypto.model_from_bytes(study.initial, limits)
    blocks = [server.load_model_block(b.data) for b in model.blocks]
    for envelope, weight in study.honest:
        for block in crypto.update_from_bytes(envelope, limits).blocks:
            server.add_weighted(blocks[block.index], server.load_update_block(block.data), weight)
    return [server.block_to_bytes(b) for b in blocks]


def assert_repaired(study: Study, server: crypto.ServerCipher) -> None:
    """The served model is the honest updates' model: bit for bit, and within 1e-6."""
    wait_published(study.job)
    served = study.job.snapshot()
    expected = reference_blocks(study, server)
    decrypt = study.hospital.cipher.decrypt_block
    for got, want in zip(served.blocks, expected, strict=True):
        assert np.max(np.abs(decrypt(got) - decrypt(want))) <= 1e-6
    assert list(served.blocks) == expected


async def test_a_flipped_bit_is_located_removed_and_its_sender_quarantined(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
) -> None:
    # Prepare: a good version 1 (a metrics report on it), b's flipped bit at version 2,
    # then a's update trained on version 1 (in flight when the corruption came) at 3.
    study = await start_study(make_job, hospital, clients)
    await study.honest_update("a", 1, base_version=0)
    await report_metrics(study.job, study.client("a"), 1, {"loss": 0.5, "n_samples": 10})
    bad_id, bad = hospital.corrupted_update(
        hospital.model_values(2), base_version=1, corruption="flip", server=server
    )
    await study.push("b", bad, honest=False)
    await study.honest_update("a", 3, base_version=1)

    # Execute: c checks version 3 and reports it bad; the clients answer the probes.
    assert await check_served(study, "c") == (3, False)
    assert study.job.view().integrity.state is IntegrityState.LOCATING
    answered = await answer_probes(study)

    # Assert
    assert answered == [(2, None, False)]  # version 2 bad, version 1 good: the culprit is b's
    view = study.job.view()
    assert (view.integrity.state, view.integrity.probe, view.version) == (
        IntegrityState.HEALTHY,
        None,
        4,
    )
    assert_repaired(study, server)
    status = study.job.status().integrity
    (repair,) = status.repairs
    assert (repair.version, repair.first_bad_version, repair.versions_lost) == (4, 2, 2)
    assert [(r.update_id, r.client_id, r.version, r.weight) for r in repair.removed] == [
        (str(bad_id), "client-b", 2, 1.0)
    ]
    assert repair.quarantined == ("client-b",)
    assert [q.client_id for q in status.quarantined] == ["client-b"]
    assert status.updates_removed == 1
    assert [(p.probe.version, p.outcome) for p in status.probes] == [(2, ProbeOutcome.BAD)]
    assert await check_served(study, "c") == (4, True)


async def test_a_quarantined_client_is_refused_until_released_and_its_removed_update_never_returns(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
) -> None:
    # Prepare: b's update removed by hand, b quarantined.
    study = await start_study(make_job, hospital, clients)
    removed_id, removed = hospital.update(hospital.model_values(1), base_version=0)
    await study.push("b", removed, honest=False)
    await study.job.repair(body_reader(json.dumps({"update_ids": [str(removed_id)]}).encode()))
    _, later = hospital.update(hospital.model_values(2), base_version=2)

    # Execute / Assert: refused while quarantined, slots too.
    with pytest.raises(ClientQuarantinedError, match="hefl-admin job release"):
        await push_update(study.job, study.client("b"), later)
    with pytest.raises(ClientQuarantinedError):
        study.job.acquire_slot(study.client("b"))
    await study.job.release("client-b")
    with pytest.raises(ClientNotQuarantinedError):
        await study.job.release("client-b")
    resent = await push_update(study.job, study.client("b"), removed)
    assert resent.duplicate  # its first answer, never applied again
    assert study.job.view().version == 2
    await study.push("b", later)
    assert study.job.view().version == 3
    assert study.job.status().integrity.quarantined == ()
    assert_repaired(study, server)


async def test_with_a_buffer_each_suspects_sender_checks_its_own_update(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
    other_key: crypto.ClientCipher,
) -> None:
    # Prepare: K = 3; version 1 good; version 2 holds b's block under another key.
    study = await start_study(make_job, hospital, clients, buffer_size=3)
    for seed, name in enumerate("abc", start=1):
        await study.honest_update(name, seed, base_version=0)
    await report_metrics(study.job, study.client("c"), 1, {"loss": 0.5})
    a2 = await study.honest_update("a", 4, base_version=1)
    bad_id, bad = hospital.corrupted_update(
        hospital.model_values(5),
        base_version=1,
        corruption="other_key",
        server=server,
        other=other_key,
    )
    await study.push("b", bad, honest=False)
    c2 = await study.honest_update("c", 6, base_version=1)
    assert await check_served(study, "a") == (2, False)

    # Execute: the first probe is a's own update on version 1; nobody else may pull it.
    probe = study.job.view().integrity.probe
    assert probe is not None
    assert (probe.version, probe.update_id, probe.client_id) == (1, str(a2), "client-a")
    for name in ("b", "c"):
        with pytest.raises(ProbeNotOfferedError, match="sender of that update only"):
            study.job.download_model(study.client(name), None, None, version=1, update_id=a2)
    with pytest.raises(ProbeNotOfferedError):
        study.job.download_model(study.client("a"), None, None, version=1)
    answered = await answer_probes(study)

    # Assert
    assert answered == [(1, str(a2), True), (1, str(bad_id), False), (1, str(c2), True)]
    assert study.job.view().version == 3
    (repair,) = study.job.status().integrity.repairs
    assert [r.update_id for r in repair.removed] == [str(bad_id)]
    assert repair.quarantined == ("client-b",)
    assert_repaired(study, server)


async def test_a_suspect_whose_sender_does_not_answer_is_removed_but_not_quarantined(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
    other_key: crypto.ClientCipher,
) -> None:
    # Prepare: K = 3, c's update corrupted, and c never answers its probe.
    now = [1000.0]
    study = await start_study(
        make_job, hospital, clients, buffer_size=3, probe_timeout=60, clock=lambda: now[0]
    )
    for seed, name in enumerate("abc", start=1):
        await study.honest_update(name, seed, base_version=0)
    await report(study.job, study.client("a"), 1, ok=True)
    await study.honest_update("a", 4, base_version=1)
    await study.honest_update("b", 5, base_version=1)
    bad_id, bad = hospital.corrupted_update(
        hospital.model_values(6),
        base_version=1,
        corruption="other_key",
        server=server,
        other=other_key,
    )
    await study.push("c", bad, honest=False)
    await check_served(study, "a")
    await answer_probes(study, silent=["client-c"])

    # Execute: the deadline passes.
    study.job.tick().result()
    assert study.job.view().integrity.probe is not None  # not yet
    now[0] += 61
    study.job.tick().result()

    # Assert
    status = study.job.status().integrity
    assert status.state is IntegrityState.HEALTHY
    (repair,) = status.repairs
    assert [r.update_id for r in repair.removed] == [str(bad_id)]
    assert repair.quarantined == ()
    assert "not quarantined" in repair.reason
    assert status.probes[-1].outcome is ProbeOutcome.TIMEOUT
    assert_repaired(study, server)


async def test_the_search_goes_on_after_a_restart_and_a_logged_repair_is_replayed(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a bad version reported; the server restarts in the middle of the search.
    live = tmp_path / "live"
    study = await start_study(make_job, hospital, clients, state_dir=live)
    await study.honest_update("a", 1, base_version=0)
    await report(study.job, study.client("a"), 1, ok=True)
    _, bad = hospital.corrupted_update(
        hospital.model_values(2), base_version=1, corruption="flip", server=server
    )
    await study.push("b", bad, honest=False)
    for seed in (3, 4):
        await study.honest_update("a", seed, base_version=1)
    await check_served(study, "c")
    first_probe = study.job.view().integrity.probe
    restarted = make_job(state_dir=crash_image(live, tmp_path / "image"))
    assert restarted.view().integrity.probe == first_probe

    # Execute: the repair is logged, then applying it crashes (a kill -9 between the two).
    def crash(self: ModelState, record: RepairRecord, removed: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(ModelState, "repair", crash)
    study.job = restarted
    await answer_probes(study)
    assert isinstance(restarted.status().integrity.detail, str)
    with pytest.raises(StorageError):
        await push_update(
            restarted,
            study.client("a"),
            hospital.update(hospital.model_values(9), base_version=4)[1],
        )
    monkeypatch.undo()
    image = crash_image(tmp_path / "image", tmp_path / "after-crash")
    recovered = make_job(state_dir=image)

    # Assert: the log's repair is applied at startup, and nothing is searched any more.
    study.job = recovered
    assert recovered.view().version == 5
    assert recovered.view().integrity.state is IntegrityState.HEALTHY
    assert_repaired(study, server)
    assert [q.client_id for q in recovered.status().integrity.quarantined] == ["client-b"]
    store = FileStore(crash_image(image, tmp_path / "again") / "jobs" / JOB)
    assert sum(isinstance(r, RepairRecord) for r in store.read_log()) == 1
    store.close()


async def test_an_update_older_than_the_repair_window_cannot_be_removed(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
    tmp_path: Path,
) -> None:
    # Prepare: a window of 2 versions, a checkpoint after every version.
    state_dir = tmp_path / "state"
    study = await start_study(
        make_job, hospital, clients, state_dir=state_dir, repair_window=2, checkpoint_every=1
    )
    _, bad = hospital.corrupted_update(
        hospital.model_values(1), base_version=0, corruption="flip", server=server
    )
    await study.push("b", bad, honest=False)
    ids = [await study.honest_update("a", seed, base_version=seed - 1) for seed in range(2, 6)]
    wait_published(study.job)

    # Execute / Assert: by hand, the old one is refused, the newest two may go.
    old = ids[0]  # version 2: the window holds versions 4 and 5
    with pytest.raises(RepairWindowExceededError, match="FLSERVER_REPAIR_WINDOW=2"):
        await study.job.repair(body_reader(json.dumps({"update_ids": [str(old)]}).encode()))
    with pytest.raises(UpdateNotFoundError):
        await study.job.repair(
            body_reader(json.dumps({"update_ids": [str(uuid.uuid4())]}).encode())
        )
    wal = FileStore(crash_image(state_dir, tmp_path / "image") / "jobs" / JOB)
    assert [r.version for r in wal.read_updates(0)][-2:] == [4, 5]  # the window is logged
    wal.close()
    # The search: version 5 reported bad, nothing known good within the window.
    await check_served(study, "c")
    await answer_probes(study)
    status = study.job.status().integrity
    assert status.state is IntegrityState.LOCATING
    assert status.probe is None
    assert "FLSERVER_REPAIR_WINDOW" in (status.detail or "")
    assert status.repairs == ()


async def test_the_log_keeps_the_repair_window_and_no_more(
    make_job: MakeJob, hospital: Hospital, clients: dict[str, AccessClaims], tmp_path: Path
) -> None:
    # Prepare: a window of 3 versions, a checkpoint every 4.
    state_dir = tmp_path / "state"
    study = await start_study(
        make_job, hospital, clients, state_dir=state_dir, repair_window=3, checkpoint_every=4
    )
    kept = []

    # Execute: 20 versions, each published (so checkpointed when due), the log read after each.
    for version in range(1, 21):
        await study.honest_update("a", version, base_version=version - 1)
        wait_published(study.job)
        image = crash_image(state_dir, tmp_path / f"image-{version}")
        store = FileStore(image / "jobs" / JOB)
        checkpoint = store.load_checkpoint()
        kept.append(
            (
                version,
                checkpoint.version if checkpoint else 0,
                [r.version for r in store.read_updates(0)],
            )
        )
        store.close()

    # Assert: the log holds every version the window reaches back to from the checkpoint,
    # and, dropped a segment (a checkpoint's interval) at a time, at most 4 * (1 + 1).
    for version, checkpointed, logged in kept:
        assert logged == list(range(logged[0], version + 1))
        assert logged[0] <= max(1, checkpointed - 3 + 1)
        assert len(logged) <= 4 * 2


async def test_a_quarantined_senders_later_bad_update_goes_with_the_first(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
) -> None:
    # Prepare: K = 1; b's flipped bit at version 2, and again at 3 (b pulled version 1
    # again: publish lag), then a's honest update at 4.
    study = await start_study(make_job, hospital, clients)
    await study.honest_update("a", 1, base_version=0)
    await report_metrics(study.job, study.client("a"), 1, {"loss": 0.5, "n_samples": 10})
    bad_ids = []
    for seed in (2, 3):
        bad_id, bad = hospital.corrupted_update(
            hospital.model_values(seed), base_version=1, corruption="flip", server=server
        )
        await study.push("b", bad, honest=False)
        bad_ids.append(str(bad_id))
    await study.honest_update("a", 4, base_version=1)

    # Execute
    assert await check_served(study, "c") == (4, False)
    answered = await answer_probes(study)

    # Assert: one repair removes both of b's updates and keeps a's; the search is over.
    assert answered == [(2, None, False)]
    assert study.job.view().version == 5
    assert_repaired(study, server)
    status = study.job.status().integrity
    (repair,) = status.repairs
    assert [(r.update_id, r.version) for r in repair.removed] == [(bad_ids[0], 2), (bad_ids[1], 3)]
    assert (repair.first_bad_version, repair.versions_lost) == (2, 3)
    assert repair.quarantined == ("client-b",)
    assert bad_ids[1] in repair.reason
    assert await check_served(study, "c") == (5, True)
    assert study.job.status().integrity.state is IntegrityState.HEALTHY


async def culprit_with_an_update_in_the_buffer(
    study: Study, server: crypto.ServerCipher, other_key: crypto.ClientCipher
) -> list[str]:
    """K = 3: version 1 good, b's block under another key in version 2; then b's next
    update and a's honest one wait in the buffer. The ids of b's two updates."""
    hospital = study.hospital
    for seed, name in enumerate("abc", start=1):
        await study.honest_update(name, seed, base_version=0)
    await report_metrics(study.job, study.client("c"), 1, {"loss": 0.5})
    bad_ids = []
    for a_seed, b_seed, base in ((4, 5, 1), (7, 8, 2)):
        await study.honest_update("a", a_seed, base_version=base)
        bad_id, bad = hospital.corrupted_update(
            hospital.model_values(b_seed),
            base_version=base,
            corruption="other_key",
            server=server,
            other=other_key,
        )
        await study.push("b", bad, honest=False)
        bad_ids.append(str(bad_id))
        if base == 1:
            await study.honest_update("c", 6, base_version=1)
    assert (study.job.view().version, await check_served(study, "c")) == (2, (2, False))
    return bad_ids


async def test_a_quarantined_senders_update_in_the_buffer_is_removed_not_flushed(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
    other_key: crypto.ClientCipher,
) -> None:
    # Prepare
    study = await start_study(make_job, hospital, clients, buffer_size=3)
    bad_ids = await culprit_with_an_update_in_the_buffer(study, server, other_key)

    # Execute
    answered = await answer_probes(study)

    # Assert: b's buffered update is gone with its first; a's buffered update is in.
    assert [(u, ok) for _, u, ok in answered][1] == (bad_ids[0], False)
    assert study.job.view().version == 4  # the buffer's version 3, then the repair's
    assert_repaired(study, server)
    (repair,) = study.job.status().integrity.repairs
    assert [(r.update_id, r.version) for r in repair.removed] == [(bad_ids[0], 2), (bad_ids[1], 3)]
    assert (repair.quarantined, repair.versions_lost) == (("client-b",), 1)
    assert await check_served(study, "c") == (4, True)


async def test_a_logged_repair_of_a_quarantined_senders_updates_is_replayed_after_kill_9(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
    other_key: crypto.ClientCipher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: the repair is logged, then applying it crashes (a kill -9 between the two).
    live = tmp_path / "live"
    study = await start_study(make_job, hospital, clients, buffer_size=3, state_dir=live)
    bad_ids = await culprit_with_an_update_in_the_buffer(study, server, other_key)

    def crash(self: ModelState, record: RepairRecord, removed: object) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(ModelState, "repair", crash)
    await answer_probes(study)
    monkeypatch.undo()

    # Execute
    study.job = make_job(
        state_dir=crash_image(live, tmp_path / "image"), buffer_size=3, weighting="uniform"
    )

    # Assert: the one logged repair removes both of b's updates at startup.
    assert study.job.view().version == 4
    assert study.job.view().integrity.state is IntegrityState.HEALTHY
    assert_repaired(study, server)
    (repair,) = study.job.status().integrity.repairs
    assert [r.update_id for r in repair.removed] == bad_ids
    assert [q.client_id for q in study.job.status().integrity.quarantined] == ["client-b"]
    store = FileStore(crash_image(tmp_path / "image", tmp_path / "again") / "jobs" / JOB)
    (logged,) = [r for r in store.read_log() if isinstance(r, RepairRecord)]
    assert [str(r.update_id) for r in logged.removed] == bad_ids
    store.close()


async def test_an_administrators_repair_with_quarantine_removes_the_senders_later_updates(
    make_job: MakeJob,
    hospital: Hospital,
    clients: dict[str, AccessClaims],
    server: crypto.ServerCipher,
) -> None:
    # Prepare: b's updates at versions 1, 2, 4 and 6; a's at 3, c's at 5.
    study = await start_study(make_job, hospital, clients)
    senders = ("b", "b", "a", "b", "c", "b")
    ids = []
    for seed, name in enumerate(senders, start=1):
        update_id, envelope = hospital.update(hospital.model_values(seed), base_version=seed - 1)
        await study.push(name, envelope, honest=name != "b" or seed == 1)
        ids.append(str(update_id))

    async def repair(update_id: str, quarantine: bool) -> list[str]:
        body = {"update_ids": [update_id], "quarantine": quarantine}
        done = await study.job.repair(body_reader(json.dumps(body).encode()))
        return [r.update_id for r in done.removed]

    # Execute / Assert: without quarantine, only the update named goes; with it, the
    # sender's updates from the one named on (not those before it, nor others').
    assert await repair(ids[3], quarantine=False) == [ids[3]]
    assert await repair(ids[1], quarantine=True) == [ids[1], ids[5]]
    assert study.job.status().integrity.updates_removed == 3
    assert_repaired(study, server)
