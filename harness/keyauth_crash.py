"""kill -9 of keyauth during enrollment: no enrollment is lost, half done or orphaned."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.enrollment import enrollment_token
from harness.parties import TEST_PROFILE, enroll
from harness.services import keyauth_service, new_admin_key

__all__ = ["KeyauthCrashResult", "crash_keyauth"]


@dataclass
class KeyauthCrashResult:
    """``enrolled_acknowledged`` counts 201 and 200 answers; ``completed_on_retry`` the 201s
    after a lost attempt (it never committed), ``redelivered`` the 200s (it had: keyauth
    answered the same enrollment again); ``orphaned`` must stay 0."""

    kills: int
    enrolled_acknowledged: int
    answers_lost: int
    completed_on_retry: int
    redelivered: int
    orphaned: int
    clients_listed: int
    unexplained_clients: int
    credentials_working: int
    tokens_dead_after_confirmation: bool
    secret_context_unchanged: bool
    seconds: float


def crash_keyauth(work: Path, *, kills: int, seed: int = 0) -> KeyauthCrashResult:
    """Enroll continuously while keyauth is killed (SIGKILL); then check every credential.

    A hospital whose enroll got no answer resends the same token: keyauth answers 201 if
    the first attempt never committed and re-delivers the same enrollment (200) if it did.
    """
    rng = random.Random(seed)
    start = time.perf_counter()
    admin = new_admin_key()
    # Started and killed by hand, not by ``with``: it must survive its own crashes.
    keyauth = keyauth_service(work / "keyauth", admin, work / "keyauth.log", profile=TEST_PROFILE)
    keyauth.start()
    url = keyauth.url
    first = enroll(url, admin, "reference")
    acked: dict[str, str] = {first.client_id: first.client_secret}
    tokens: dict[str, str] = {}  # client id -> the enrollment token that enrolled it
    lost: set[str] = set()  # names whose enroll request got no answer at least once
    completed_on_retry: set[str] = set()
    redelivered: set[str] = set()
    orphaned: set[str] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def enroller() -> None:
        k = 0
        try:
            while not stop.is_set():
                name = f"h-{k}"
                try:
                    token = enrollment_token(url, admin, name)
                except Exception:  # the admin's step failed: keyauth is down, try again
                    time.sleep(0.05)
                    continue
                k += 1
                answer = None
                for _attempt in range(200):  # a hospital retries its enrollment token
                    try:
                        answer = httpx.post(f"{url}/v1/enroll", json={"token": token}, timeout=10)
                        break
                    except httpx.TransportError:
                        lost.add(name)
                        time.sleep(0.05)
                if answer is None:
                    raise AssertionError(f"enroll of {name} never answered")
                if answer.status_code in (200, 201):
                    body = answer.json()
                    acked[body["client_id"]] = body["client_secret"]
                    tokens[body["client_id"]] = token
                    if answer.status_code == 200:
                        redelivered.add(name)  # committed before the kill, answered again
                    elif name in lost:
                        completed_on_retry.add(name)
                elif name in lost and answer.status_code in (401, 403):
                    orphaned.add(name)  # enrolled, but the answer with the secret was lost
                else:
                    raise AssertionError(f"enroll {answer.status_code} {answer.text}")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=enroller, daemon=True)
    thread.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.0))
            keyauth.kill()
            keyauth.start()
        stop.set()
        thread.join(timeout=60)
        if errors:
            raise errors[0]
        admin_headers = {"X-Admin-Key": admin}
        listed = httpx.get(f"{url}/v1/clients", headers=admin_headers, timeout=10).json()
        working = 0
        unchanged = True
        dead = True
        for client_id, secret in acked.items():
            token = httpx.post(
                f"{url}/v1/token",
                json={"client_id": client_id, "client_secret": secret},
                timeout=10,
            )
            if token.status_code != 200:
                continue
            working += 1
            context = httpx.get(
                f"{url}/v1/keys/secret-context",
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                timeout=10,
            )
            unchanged &= context.content == first.secret_context
            if client_id in tokens:  # the access token confirmed it: no more re-delivery
                replay = httpx.post(
                    f"{url}/v1/enroll", json={"token": tokens[client_id]}, timeout=10
                )
                dead &= replay.status_code == 403
    finally:
        stop.set()
        keyauth.stop()
    listed_ids = {c["id"] for c in listed}
    unexplained = [c for c in listed if c["id"] not in acked and c["name"] not in lost]
    assert listed_ids >= set(acked), "an acknowledged enrollment was lost"
    return KeyauthCrashResult(
        kills=kills,
        enrolled_acknowledged=len(acked),
        answers_lost=len(lost),
        completed_on_retry=len(completed_on_retry),
        redelivered=len(redelivered),
        orphaned=len(orphaned),
        clients_listed=len(listed),
        unexplained_clients=len(unexplained),
        credentials_working=working,
        tokens_dead_after_confirmation=dead,
        secret_context_unchanged=unchanged,
        seconds=time.perf_counter() - start,
    )
