"""kill -9 of fl_server under load: every acknowledged update is applied exactly once."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

import crypto
from harness.parties import (
    TEST_PROFILE,
    Party,
    Values,
    decrypt_model,
    enroll,
    make_layout,
    random_blocks,
    start_job,
    update_envelope,
    wait_published,
)
from harness.services import keyauth_service, new_admin_key, server_service

__all__ = ["CrashResult", "Ledger", "crash_server"]


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
            answer = httpx.post(
                f"{url}/v1/updates", content=envelope, headers=party.auth, timeout=30
            )
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
    """What ``crash_server`` saw: kills, acknowledged and applied updates, the model's error."""

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


def crash_server(
    work: Path, *, kills: int, clients: int = 3, n_params: int = 5000, seed: int = 0
) -> CrashResult:
    """Clients push while the server is killed (SIGKILL) ``kills`` times at random moments."""
    rng = random.Random(seed)
    start = time.perf_counter()
    admin = new_admin_key()
    with keyauth_service(
        work / "keyauth", admin, work / "keyauth.log", profile=TEST_PROFILE
    ) as keyauth:
        parties = [enroll(keyauth.url, admin, f"hospital-{i}") for i in range(clients)]
        profile = parties[0].profile
        layout = make_layout(n_params, profile)
        initial = random_blocks(layout, profile, 10_000) * 50
        ledger = Ledger()
        stop = threading.Event()
        errors: list[BaseException] = []
        # Started and killed by hand, not by ``with``: it must survive its own crashes.
        server = server_service(
            keyauth.url,
            work / "server",
            work / "server.log",
            client_updates_per_minute="0",
            checkpoint_every="3",
            target_updates="1000000",
        )
        server.start()
        start_job(server.url, parties[0], layout, initial)
        url = server.url

        def hospital(index: int, party: Party) -> None:
            k = 0
            try:
                while not stop.is_set():
                    try:
                        version = int(httpx.get(f"{url}/v1/job", timeout=10).json()["version"])
                    except (httpx.TransportError, ValueError, KeyError):
                        time.sleep(0.05)
                        continue
                    values = random_blocks(layout, profile, 1000 * (index + 1) + k)
                    uid, envelope = update_envelope(party, layout, values, version)
                    # Once sent, an update is resent until answered, even after the stop.
                    answer = _push_until_acked(url, party, envelope, time.monotonic() + 120, ledger)
                    if answer is None:
                        raise AssertionError(f"update {uid} never answered")
                    if answer.status_code == 202:
                        body = answer.json()
                        assert body["update_id"] == uid
                        ledger.add(uid, body["weight"], values, body["duplicate"])
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
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.3, 1.5))
                served = httpx.get(f"{url}/v1/job", timeout=10).json()["version"]
                server.kill()
                server.start()
                restarts += 1
                after = httpx.get(f"{url}/v1/job", timeout=10).json()["version"]
                resumed &= after >= served  # nothing acknowledged and applied was lost
            time.sleep(0.5)
            stop.set()
            for thread in threads:
                thread.join(timeout=180)
            if errors:
                raise errors[0]
            n = len(ledger.acked)
            served_model = wait_published(url, n)
            version, model = decrypt_model(parties[0], layout, served_model.content)
            status = httpx.get(f"{url}/v1/status", timeout=10).json()
        finally:
            stop.set()
            server.stop()
    expected = ledger.model(initial, profile)
    bound = profile.error_bound(n + 1)
    return CrashResult(
        kills=kills,
        restarts=restarts,
        acknowledged=n,
        applied_version=version,
        applied_count=int(status["updates_applied"]),
        duplicates_answered=ledger.duplicates,
        retries=ledger.retries,
        max_error=float(np.max(np.abs(model - expected))),
        error_bound=bound,
        model_resumed=resumed,
        seconds=time.perf_counter() - start,
    )
