"""kill -9 of fl_server under load, two jobs: each acknowledged update applied once, in its job."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import crypto
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.parties import (
    TEST_PROFILE,
    Party,
    Values,
    decrypt_model,
    enroll,
    job_url,
    make_layout,
    random_blocks,
    start_job,
    update_envelope,
    wait_published,
)
from harness.services import keyauth_service, new_admin_key, server_service
from harness.studies import study_json

__all__ = ["JOBS", "CrashResult", "Ledger", "crash_server"]

# Two jobs on one server; every hospital trains in both, in turn.
JOBS = ("crash-a", "crash-b")


@dataclass
class Ledger:
    """What the server acknowledged: plaintext update and applied weight, by update id."""

    acked: dict[str, tuple[float, Values]] = field(default_factory=dict)
    duplicates: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, uid: str, weight: float, values: Values, duplicate: bool) -> None:
        with self.lock:
            if uid in self.acked:
                assert self.acked[uid][0] == weight, "a retry was answered with another weight"
            self.acked[uid] = (weight, values)
            self.duplicates += duplicate

    def model(self, initial: Values, profile: crypto.CkksProfile) -> Values:
        total = initial.copy()
        for weight, values in self.acked.values():
            total += profile.applied_weight(weight) * values
        return total


def _push_until_acked(
    url: str, party: Party, envelope: bytes, deadline: float, ledger: Ledger
) -> httpx.Response | None:
    """What the fl_client runner does: resend the same envelope until it gets an answer."""
    first = True
    while time.monotonic() < deadline:
        if not first:
            with ledger.lock:
                ledger.retries += 1
        first = False
        try:
            answer = httpx.post(url, content=envelope, headers=party.auth, timeout=30)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if answer.status_code == 503:
            time.sleep(0.05)
            continue
        return answer
    return None


@dataclass
class CrashResult:
    """What ``crash_server`` saw: kills, acknowledged and applied updates, the models' error.

    The counts are summed over both jobs (the error is the larger of the two); ``jobs``
    has each job's own: ``acknowledged``, ``applied_version``, ``applied_count``,
    ``duplicates_answered``, ``max_error``, ``error_bound``.
    """

    kills: int
    restarts: int
    acknowledged: int
    applied_version: int
    applied_count: int
    duplicates_answered: int
    retries: int
    max_error: float
    error_bound: float
    model_resumed: bool
    seconds: float
    jobs: dict[str, dict[str, Any]]


def _versions(url: str, party: Party) -> dict[str, int]:
    return {
        job: int(httpx.get(job_url(url, job), headers=party.auth, timeout=10).json()["version"])
        for job in JOBS
    }


def crash_server(
    work: Path,
    *,
    kills: int,
    clients: int = 3,
    n_params: int = 5000,
    seed: int = 0,
    shards: int = 2,
) -> CrashResult:
    """Clients push to two jobs while the server is killed (SIGKILL) ``kills`` times at
    random moments; each job's model is split across ``shards`` worker processes (0: in
    the server's process)."""
    rng = random.Random(seed)
    start = time.perf_counter()
    admin = new_admin_key()
    with keyauth_service(
        work / "keyauth", admin, work / "keyauth.log", profile=TEST_PROFILE
    ) as keyauth:
        parties = [enroll(keyauth.url, admin, f"hospital-{i}") for i in range(clients)]
        profile = parties[0].profile
        layout = make_layout(n_params, profile)
        initial = {
            job: random_blocks(layout, profile, 10_000 + k) * 50 for k, job in enumerate(JOBS)
        }
        ledgers = {job: Ledger() for job in JOBS}
        stop = threading.Event()
        errors: list[BaseException] = []
        # Started and killed by hand, not by ``with``: it must survive its own crashes.
        server = server_service(
            keyauth.url,
            work / "server",
            work / "server.log",
            client_updates_per_minute="0",
            checkpoint_every="3",
            shards=str(shards),
        )
        server.start()
        token = admin_token(keyauth.url, admin)
        viewer = viewer_token(keyauth.url, admin)  # outlives the run, unlike an admin token
        for job in JOBS:
            create_job(server.url, token, study_json(job, profile=profile.name))
            start_job(server.url, job, parties[0], layout, initial[job])
        url = server.url

        def hospital(index: int, party: Party) -> None:
            k = 0
            try:
                while not stop.is_set():
                    job = JOBS[(index + k) % len(JOBS)]
                    try:
                        seen = httpx.get(job_url(url, job), headers=party.auth, timeout=10)
                        version = int(seen.json()["version"])
                    except (httpx.TransportError, ValueError, KeyError):
                        # The server is down or starting: asked again, like a push.
                        with ledgers[job].lock:
                            ledgers[job].retries += 1
                        time.sleep(0.05)
                        continue
                    values = random_blocks(layout, profile, 1000 * (index + 1) + k)
                    uid, envelope = update_envelope(party, layout, values, version)
                    # Once sent, an update is resent until answered, even after the stop.
                    answer = _push_until_acked(
                        job_url(url, job, "/updates"),
                        party,
                        envelope,
                        time.monotonic() + 120,
                        ledgers[job],
                    )
                    if answer is None:
                        raise AssertionError(f"update {uid} never answered")
                    if answer.status_code == 202:
                        body = answer.json()
                        assert body["update_id"] == uid
                        ledgers[job].add(uid, body["weight"], values, body["duplicate"])
                    elif answer.json().get("code") != "too_stale":
                        raise AssertionError(f"{answer.status_code} {answer.text}")
                    k += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=hospital, args=(i, p), daemon=True)
            for i, p in enumerate(parties)
        ]
        for thread in threads:
            thread.start()
        restarts = 0
        resumed = True
        jobs: dict[str, dict[str, Any]] = {}
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.3, 1.5))
                served = _versions(url, parties[0])
                server.kill()
                server.start()
                restarts += 1
                after = _versions(url, parties[0])
                # Nothing acknowledged and applied was lost, in either job.
                resumed &= all(after[job] >= served[job] for job in JOBS)
            time.sleep(0.5)
            stop.set()
            for thread in threads:
                thread.join(timeout=180)
            if errors:
                raise errors[0]
            for job in JOBS:
                ledger = ledgers[job]
                n = len(ledger.acked)
                served_model = wait_published(url, job, parties[0], n)
                version, model = decrypt_model(parties[0], layout, served_model.content)
                status = read_status(url, viewer, job)
                expected = ledger.model(initial[job], profile)
                jobs[job] = {
                    "acknowledged": n,
                    "applied_version": version,
                    "applied_count": int(status["updates_applied"]),
                    "duplicates_answered": ledger.duplicates,
                    "max_error": float(np.max(np.abs(model - expected))),
                    "error_bound": profile.error_bound(n + 1),
                }
        finally:
            stop.set()
            server.stop()
    return CrashResult(
        kills=kills,
        restarts=restarts,
        acknowledged=sum(j["acknowledged"] for j in jobs.values()),
        applied_version=sum(j["applied_version"] for j in jobs.values()),
        applied_count=sum(j["applied_count"] for j in jobs.values()),
        duplicates_answered=sum(j["duplicates_answered"] for j in jobs.values()),
        retries=sum(ledger.retries for ledger in ledgers.values()),
        max_error=max(j["max_error"] for j in jobs.values()),
        error_bound=max(j["error_bound"] for j in jobs.values()),
        model_resumed=resumed,
        seconds=time.perf_counter() - start,
        jobs=jobs,
    )
