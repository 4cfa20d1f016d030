"""Hospital-level DP through real keyauth and fl_server: clipped updates, noise at the server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import crypto
import hefl_study
from fl_client import ClientSettings, Runner, enroll
from fl_client.models import model_from_spec
from fl_client.output import Reporter
from fl_client.state import LocalState
from fl_server.hospital_privacy import hospital_epsilon
from fl_server.store import FileStore, UpdateRecord
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.enrollment import enrollment_token
from harness.services import keyauth_service, server_service
from harness.studies import study_mapping

pytestmark = pytest.mark.e2e

ADMIN_KEY = "fl-client-hdp-e2e-admin-" + "k" * 20
CLIP, Z, DELTA = 0.5, 0.2, 1e-4
PRIVACY = {"level": "hospital", "clip": CLIP, "noise_multiplier": Z, "delta": DELTA}
SITES = ("cleveland", "hungary")
UPDATES = 8


@pytest.fixture(scope="module")
def keyauth_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("keyauth")
    with keyauth_service(root / "state", ADMIN_KEY, root / "keyauth.log") as keyauth:
        yield keyauth.url


def _study(name: str) -> hefl_study.StudySpec:
    raw = study_mapping(
        name,
        profile=crypto.DEFAULT_PROFILE.name,
        inputs=13,
        training={"lr": 0.1, "batch_size": 16, "local_steps": 4},
        target_updates=UPDATES,
    )
    return hefl_study.spec_from_mapping({**raw, "privacy": PRIVACY})


def test_a_hospital_dp_study_trains_reports_epsilon_and_its_model_carries_the_noise(
    keyauth_url: str, tmp_path: Path
) -> None:
    # Prepare: a job of 8 updates from two hospitals, every update clipped and noised
    spec = _study("hdp")
    with server_service(
        keyauth_url, tmp_path / "state", tmp_path / "fl_server.log", client_updates_per_minute="0"
    ) as server:
        create_job(server.url, admin_token(keyauth_url, ADMIN_KEY), hefl_study.spec_to_json(spec))
        settings = {
            site: ClientSettings(
                state_dir=tmp_path / site,
                keyauth_url=keyauth_url,
                server_url=server.url,
                job="hdp",
                data="heart-disease",
                site=site,
                output="quiet",
            )
            for site in SITES
        }
        for site, one in settings.items():
            enroll(one, enrollment_token(keyauth_url, ADMIN_KEY, site))

        # Execute: both train until the job is done
        def train(one: ClientSettings) -> None:
            with Runner(one, reporter=Reporter("quiet")) as runner:
                runner.run()

        with ThreadPoolExecutor(len(SITES)) as pool:
            for done in [pool.submit(train, one) for one in settings.values()]:
                done.result(timeout=300)
        status = read_status(server.url, viewer_token(keyauth_url, ADMIN_KEY), "hdp")
        prometheus = httpx.get(f"{server.url}/metrics").text

    # Assert: done; each hospital's ε is Opacus' RDP of its applied updates at z
    assert status["state"] == "done", status
    assert status["updates_applied"] == UPDATES
    epsilons = []
    for client in status["clients"].values():
        privacy = client["privacy"]
        assert privacy["level"] == "hospital"
        assert privacy["updates"] == client["updates_applied"]
        assert privacy["delta"] == DELTA
        assert privacy["target_epsilon"] is None
        want = hospital_epsilon(Z, client["updates_applied"], DELTA)
        assert privacy["epsilon"] == pytest.approx(want)
        epsilons.append(privacy["epsilon"])
    assert f'hefl_server_privacy_epsilon_max{{job="hdp"}} {max(epsilons)}' in prometheus

    # Assert: the final model is the noise-free twin (the initial model plus every logged
    # update at its weight, in the clear) plus noise of std z·C·sqrt(Σ w²) per parameter
    store = FileStore(tmp_path / "state" / "jobs" / "hdp")
    layout = crypto.ModelLayout.from_json(store.load_layout() or b"")
    checkpoint = store.load_checkpoint()
    records = [r for r in store.read_log() if isinstance(r, UpdateRecord)]
    store.close()
    assert checkpoint is not None
    assert checkpoint.version == UPDATES
    assert [r.seq for r in records] == list(range(1, UPDATES + 1))
    stored = LocalState(tmp_path / SITES[0]).load_secret_context(1)
    assert stored is not None
    cipher = crypto.ClientCipher(stored[1], crypto.DEFAULT_PROFILE)
    limits = crypto.EnvelopeLimits(layout.n_blocks, crypto.DEFAULT_PROFILE.max_block_bytes)
    twin = layout.flatten(model_from_spec(spec).state_dict())
    for record in records:
        for block in crypto.update_from_bytes(record.envelope, limits).blocks:
            update = cipher.decrypt_block(block.data)
            # clipped at the hospital: ‖u‖ ≤ C (CKKS adds ~1e-7 per value)
            assert np.linalg.norm(update) <= CLIP + 1e-4
            twin[block.index] += record.weight * update
    final = np.stack([cipher.decrypt_block(b) for b in checkpoint.blocks])
    noise = (final - twin)[~layout.zero_mask]
    std = Z * CLIP * float(np.sqrt(sum(r.weight**2 for r in records)))
    # 14 parameters: their rms is within [0.4, 1.75] of the std but about once in 10^4 runs
    assert noise.size == 14
    assert 0.4 * std < float(np.sqrt(np.mean(noise**2))) < 1.75 * std
    assert crypto.check_model(layout, crypto.DEFAULT_PROFILE, final).check is None
    # and exactly the draws of the logged seeds (what a replay adds again)
    drawn = np.zeros_like(final)
    for record in records:
        assert record.noise_seed is not None
        for index in range(layout.n_blocks):
            rng = np.random.default_rng([record.noise_seed, index])
            drawn[index] += rng.normal(0.0, Z * CLIP * record.weight, layout.block_size)
    assert np.abs((final - twin - drawn)[~layout.zero_mask]).max() < 1e-5
    # the seeds are in the log records only: never in the status or a log line
    logged = (tmp_path / "fl_server.log").read_text()
    for record in records:
        assert record.noise_seed is not None
        assert str(record.noise_seed) not in logged
        assert str(record.noise_seed) not in str(status)
