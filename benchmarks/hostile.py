"""Hostile runs against keyauth and fl_server under real uvicorn: bad input, kill -9, load, secrets.

``python -m benchmarks.hostile [--quick]`` prints a table per part and writes
``benchmarks/results/hostile.json``. The short forms of the same functions run in
``tests/hostile/``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import random
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, given, settings

import crypto
from benchmarks._report import RESULTS_DIR, format_table, write_json
from deploy.local import (
    ServiceProcess,
    enrollment_token,
    keyauth_service,
    new_admin_key,
    server_service,
)

Values = npt.NDArray[np.float64]
TEST_PROFILE = "test-n2048"

# Envelope field boundaries (crypto/_envelope.py): prefix, update head, block head.
_PREFIX = struct.Struct("<4sBBH32s")
_UPDATE_HEAD = struct.Struct("<QI16sI")
_BLOCK_HEAD = struct.Struct("<II")
_BASE_AT = _PREFIX.size  # base version u64
_UID_AT = _PREFIX.size + 12  # update id, 16 bytes
_SEAL_HEADER = 16


# --------------------------------------------------------------------------------------
# Parties: enrolled hospitals that hold the secret key the server never sees


@dataclass
class Party:
    """An enrolled hospital: credentials, an access token and its cipher."""

    client_id: str
    client_secret: str
    token: str
    secret_context: bytes
    cipher: crypto.ClientCipher
    key_epoch: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def profile(self) -> crypto.CkksProfile:
        return self.cipher.profile


def enroll(keyauth_url: str, admin_key: str, name: str) -> Party:
    """The protocol's enrollment: token from the admin, enroll, access token, secret context."""
    with httpx.Client(base_url=keyauth_url, timeout=30) as http:
        token = enrollment_token(keyauth_url, admin_key, name)
        creds = http.post("/v1/enroll", json={"token": token}).json()
        access = http.post(
            "/v1/token",
            json={"client_id": creds["client_id"], "client_secret": creds["client_secret"]},
        ).json()["access_token"]
        secret = http.get("/v1/keys/secret-context", headers={"Authorization": f"Bearer {access}"})
        secret.raise_for_status()
    profile = crypto.get_profile(secret.headers["X-Hefl-Profile"])
    return Party(
        creds["client_id"],
        creds["client_secret"],
        access,
        secret.content,
        crypto.ClientCipher(secret.content, profile),
        int(secret.headers["X-Hefl-Key-Epoch"]),
    )


def make_layout(n_params: int, profile: crypto.CkksProfile) -> crypto.ModelLayout:
    return crypto.build_layout({"w": np.zeros(n_params, np.float32)}, profile.block_size)


def random_blocks(layout: crypto.ModelLayout, profile: crypto.CkksProfile, seed: int) -> Values:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 0.01, (layout.n_blocks, profile.block_size))


def model_envelope(party: Party, layout: crypto.ModelLayout, values: Values) -> bytes:
    blocks = tuple(
        crypto.CipherBlock(i, party.cipher.encrypt_model_block(v)) for i, v in enumerate(values)
    )
    return crypto.model_to_bytes(
        crypto.EncryptedModel(layout.fingerprint, 0, party.key_epoch, blocks)
    )


def update_envelope(
    party: Party, layout: crypto.ModelLayout, values: Values, base_version: int
) -> tuple[str, bytes]:
    uid = uuid.uuid4()
    blocks = tuple(
        crypto.CipherBlock(i, party.cipher.encrypt_update_block(v)) for i, v in enumerate(values)
    )
    update = crypto.EncryptedUpdate(layout.fingerprint, base_version, party.key_epoch, uid, blocks)
    return str(uid), crypto.update_to_bytes(update)


def restamp(envelope: bytes, base_version: int) -> tuple[str, bytes]:
    """A pre-encrypted update with a fresh update id and base version (cheap load)."""
    uid = uuid.uuid4()
    data = bytearray(envelope)
    struct.pack_into("<Q", data, _BASE_AT, base_version)
    data[_UID_AT : _UID_AT + 16] = uid.bytes
    return str(uid), bytes(data)


def start_job(url: str, party: Party, layout: crypto.ModelLayout, initial: Values) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        answer = http.put("/v1/job/layout", content=layout.to_json(), headers=party.auth)
        assert answer.status_code == 201, answer.text
        answer = http.put(
            "/v1/job/initial-model",
            content=model_envelope(party, layout, initial),
            headers=party.auth,
        )
        assert answer.status_code == 201, answer.text


def decrypt_model(party: Party, layout: crypto.ModelLayout, data: bytes) -> tuple[int, Values]:
    limits = crypto.EnvelopeLimits(layout.n_blocks, party.profile.max_block_bytes)
    model = crypto.model_from_bytes(data, limits)
    assert [b.index for b in model.blocks] == list(range(layout.n_blocks))
    return model.version, np.stack([party.cipher.decrypt_block(b.data) for b in model.blocks])


def wait_published(url: str, version: int, timeout: float = 60) -> httpx.Response:
    """The served model once it holds ``version`` (downloads may lag the applied model)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{url}/v1/model", timeout=30)
        if int(answer.headers.get("X-Hefl-Model-Version", -1)) >= version:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"the server never served version {version}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------
# 1. A corpus of hostile update envelopes


def _with_scale(secret_context: bytes, block: bytes, scale: float) -> bytes:
    """The same ciphertext with its scale field overwritten (NaN, inf, 0, negative, huge)."""
    import tenseal as ts  # only here: the corpus forges what crypto/ would refuse to write
    import tenseal.sealapi as sealapi

    sc = ts.context_from(secret_context).seal_context().data
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ct")
        Path(path).write_bytes(block)
        ct = sealapi.Ciphertext()
        ct.load(sc, path)
        ct.scale = scale
        ct.save(path)
        return Path(path).read_bytes()


def raw_update(
    fingerprint: bytes,
    blocks: list[tuple[int, bytes]],
    *,
    base: int = 0,
    epoch: int = 1,
    count: int | None = None,
    lengths: list[int] | None = None,
) -> bytes:
    """An update envelope written by hand, to say what ``update_to_bytes`` refuses to."""
    head = _PREFIX.pack(b"HEFL", 1, 2, 0, fingerprint)
    n = len(blocks) if count is None else count
    head += _UPDATE_HEAD.pack(base, epoch, uuid.uuid4().bytes, n)
    body = b""
    for k, (index, data) in enumerate(blocks):
        length = len(data) if lengths is None else lengths[k]
        body += _BLOCK_HEAD.pack(index, length) + data
    return head + body


@dataclass(frozen=True)
class Hostile:
    """One hostile request body for ``POST /v1/updates``."""

    name: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def envelope_corpus(
    party: Party, layout: crypto.ModelLayout, *, random_bodies: int = 20, seed: int = 0
) -> list[Hostile]:
    """Hostile bodies for a job at version 0 on ``layout``; none may change the model."""
    rng = random.Random(seed)
    profile = party.profile
    fp = layout.fingerprint
    values = random_blocks(layout, profile, seed)
    _, good = update_envelope(party, layout, values, 0)
    block = party.cipher.encrypt_update_block(values[0])
    out: list[Hostile] = []

    # Random bytes, and random bytes behind a valid prefix.
    for k in range(random_bodies):
        size = rng.choice([1, 7, 40, 80, 500, 5000, 40000])
        junk = rng.randbytes(size)
        out.append(Hostile(f"random {k} ({size} B)", junk))
        out.append(Hostile(f"valid head + random {k}", good[:80] + junk))

    # Truncation at every field boundary of the envelope and of the first SEAL header.
    bounds = {0, 4, 5, 6, 8, 40, 48, 52, 68, 72, 76, 80}
    bounds |= {80 + o for o in (1, 2, 3, 4, 8, 15, 16, 100)}
    first_end = 80 + len(block)
    bounds |= {first_end, first_end + 4, first_end + 8, len(good) - 1}
    for cut in sorted(b for b in bounds if b < len(good)):
        out.append(Hostile(f"truncated at {cut}", good[:cut]))

    # Header fields that lie.
    def patched(offset: int, fmt: str, value: int) -> bytes:
        data = bytearray(good)
        struct.pack_into(fmt, data, offset, value)
        return bytes(data)

    out += [
        Hostile("bad magic", b"XEFL" + good[4:]),
        Hostile("format 2", patched(4, "<B", 2)),
        Hostile("kind model", patched(5, "<B", 1)),
        Hostile("kind 9", patched(5, "<B", 9)),
        Hostile("reserved bits", patched(6, "<H", 1)),
        Hostile("other layout fingerprint", raw_update(b"\x07" * 32, [(0, block)])),
        Hostile("key epoch + 1", patched(48, "<I", party.key_epoch + 1)),
        Hostile("key epoch 0", patched(48, "<I", 0)),
        Hostile("key epoch u32 max", patched(48, "<I", 2**32 - 1)),
        Hostile("base version from the future", patched(40, "<Q", 10**6)),
        Hostile("base version u64 max", patched(40, "<Q", 2**64 - 1)),
        Hostile("block count 0", raw_update(fp, [])),
        Hostile("block count u32 max", patched(68, "<I", 2**32 - 1)),
        Hostile("block count + 1", patched(68, "<I", layout.n_blocks + 1)),
        Hostile("declared length u32 max", raw_update(fp, [(0, block)], lengths=[2**32 - 1])),
        Hostile(
            "declared length past the end", raw_update(fp, [(0, block)], lengths=[len(block) + 9])
        ),
        Hostile("declared length 0", raw_update(fp, [(0, b"")], lengths=[0])),
        Hostile("block index u32 max", raw_update(fp, [(2**32 - 1, block)])),
        Hostile("block index = n_blocks", raw_update(fp, [(layout.n_blocks, block)])),
        Hostile("duplicated block index", raw_update(fp, [(0, block), (0, block)])),
        Hostile("unordered block indices", raw_update(fp, [(1, block), (0, block)])),
        Hostile("oversized block", raw_update(fp, [(0, block * 4)])),
        Hostile("trailing byte", good + b"\x00"),
        Hostile("a model envelope", model_envelope(party, layout, values)),
    ]

    # Ciphertexts that parse as envelopes but not as this context's update blocks.
    seal_garbage = bytearray(block)
    seal_garbage[_SEAL_HEADER + 10 : _SEAL_HEADER + 200] = rng.randbytes(190)
    header_size_lie = bytearray(block)
    struct.pack_into("<Q", header_size_lie, 8, 2**62)
    out += [
        Hostile(
            "model-scale block", raw_update(fp, [(0, party.cipher.encrypt_model_block(values[0]))])
        ),
        Hostile("SEAL payload garbage", raw_update(fp, [(0, bytes(seal_garbage))])),
        Hostile("SEAL declares 2^62 bytes", raw_update(fp, [(0, bytes(header_size_lie))])),
        Hostile("SEAL bad magic", raw_update(fp, [(0, b"\x00\x00" + block[2:])])),
        Hostile("SEAL compression 7", raw_update(fp, [(0, block[:4] + b"\x07" + block[5:])])),
        Hostile("SEAL random 300 B", raw_update(fp, [(0, rng.randbytes(300))])),
    ]
    # Another context: other degree N or other primes. (The same parameters under another
    # secret key cannot be told apart by a keyless server: it would add noise. Not here.)
    for other in crypto.PROFILES.values():
        if other.name == profile.name:
            continue
        foreign = crypto.ClientCipher(crypto.generate_key_material(other).secret_context, other)
        forged = foreign.encrypt_update_block(values[0][: other.block_size])
        out.append(Hostile(f"context of profile {other.name}", raw_update(fp, [(0, forged)])))
    for label, scale in [
        ("NaN", math.nan),
        ("+inf", math.inf),
        ("-inf", -math.inf),
        ("0", 0.0),
        ("-2^24", -(2.0**24)),
        ("2^200", 2.0**200),
        ("2^24 + 1", 2.0**24 + 1),
    ]:
        forged = _with_scale(party.secret_context, block, scale)
        out.append(Hostile(f"scale {label}", raw_update(fp, [(0, forged)])))

    # Compression on the wire: the server must not inflate a body it did not agree to.
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024), compresslevel=9)
    out += [
        Hostile("gzip bomb (64 MiB of zeros)", bomb, {"Content-Encoding": "gzip"}),
        Hostile("gzip of a valid update", gzip.compress(good), {"Content-Encoding": "gzip"}),
        Hostile("valid update, says gzip", good, {"Content-Encoding": "gzip"}),
        Hostile("valid update, says deflate, br", good, {"Content-Encoding": "deflate, br"}),
    ]
    return out


@dataclass
class CorpusResult:
    tried: int
    by_status: dict[int, int]
    by_code: dict[str, int]
    failures: list[str]
    seconds: float


def check_answer(name: str, answer: httpx.Response) -> str | None:
    """Why ``answer`` is not an acceptable refusal of a hostile request, or None."""
    if not 400 <= answer.status_code < 500:
        return f"{name}: status {answer.status_code} {answer.text[:200]}"
    if answer.headers.get("content-type") != "application/problem+json":
        return f"{name}: content-type {answer.headers.get('content-type')}"
    code = answer.json().get("code")
    if not isinstance(code, str) or not code:
        return f"{name}: no code in {answer.text[:200]}"
    return None


def run_corpus(post: Callable[[Hostile], httpx.Response], corpus: list[Hostile]) -> CorpusResult:
    by_status: dict[int, int] = {}
    by_code: dict[str, int] = {}
    failures: list[str] = []
    start = time.perf_counter()
    for item in corpus:
        answer = post(item)
        problem = check_answer(item.name, answer)
        if problem:
            failures.append(problem)
        by_status[answer.status_code] = by_status.get(answer.status_code, 0) + 1
        if answer.headers.get("content-type") == "application/problem+json":
            code = str(answer.json().get("code"))
            by_code[code] = by_code.get(code, 0) + 1
    return CorpusResult(len(corpus), by_status, by_code, failures, time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# 1b. Property-based fuzzing from the services' own OpenAPI schemas (schemathesis)

PROBLEM = "application/problem+json"


def check_problem(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        ctype = response.headers.get("content-type")
        ctype = ctype[0] if isinstance(ctype, list) else ctype  # schemathesis lists values
        assert ctype == PROBLEM, response.text[:300]
        body = response.json()
        assert isinstance(body["code"], str), body
        assert body["code"], body
        assert body["status"] == response.status_code


def fuzz_api(schema: Any, headers: dict[str, str], examples: int) -> dict[str, int]:
    """Run every operation's generated cases (schemathesis strategies driven by hypothesis
    directly: its pytest plugin does not run under pytest 9); calls per operation."""
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        calls[label] = 0

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            calls[f"{case.operation.method.upper()} {case.operation.path}"] += 1
            check_problem(case.call(headers=headers, timeout=30))

        run()
    return calls


# --------------------------------------------------------------------------------------
# 2. kill -9 under load: every acknowledged update applied exactly once


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
        env = {
            "FLSERVER_KEYAUTH_URL": keyauth.url,
            "FLSERVER_STATE_DIR": str(work / "server"),
            "FLSERVER_CLIENT_UPDATES_PER_MINUTE": "0",
            "FLSERVER_CHECKPOINT_EVERY": "3",
            "FLSERVER_TARGET_UPDATES": "1000000",
        }
        server = ServiceProcess("fl_server.app:app", env, work / "server.log")
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
    env = {
        "KEYAUTH_STATE_DIR": str(work / "keyauth"),
        "KEYAUTH_ADMIN_KEY": admin,
        "KEYAUTH_PROFILE": TEST_PROFILE,
    }
    keyauth = ServiceProcess("keyauth.app:app", env, work / "keyauth.log")
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


# --------------------------------------------------------------------------------------
# 3. Load: many concurrent clients, latency, 5xx, server memory over time


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class LoadResult:
    clients: int
    seconds: float
    n_params: int
    requests: int
    accepted: int
    by_status: dict[int, int]
    rps: float
    updates_per_s: float
    p50_ms: float
    p99_ms: float
    server_5xx: int
    server_busy_503: int
    transport_errors: int
    transport_error_kinds: dict[str, int]
    rss_first_mb: float
    rss_warm_mb: float
    rss_last_mb: float
    rss_max_mb: float
    rss_samples: list[float]


async def _load_clients(
    url: str,
    keyauth_url: str,
    parties: list[Party],
    pool: list[bytes],
    seconds: float,
    latencies: list[float],
    statuses: dict[int, int],
    transport_errors: list[str],
) -> None:
    deadline = time.monotonic() + seconds
    version = [0]
    limits = httpx.Limits(max_connections=len(parties) * 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def one(index: int, party: Party) -> None:
            k = index
            while time.monotonic() < deadline:
                k += 1
                t0 = time.perf_counter()
                try:
                    if k % 5 == 0:  # a pull now and then, as clients do
                        answer = await http.get("/v1/job")
                        version[0] = max(version[0], int(answer.json()["version"]))
                    else:
                        _, body = restamp(pool[k % len(pool)], version[0])
                        answer = await http.post("/v1/updates", content=body, headers=party.auth)
                        if answer.status_code == 202:
                            version[0] = max(version[0], int(answer.json()["version"]))
                except httpx.TransportError as exc:
                    transport_errors.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 401:  # the 5-minute access token expired: renew it
                    renewed = await http.post(
                        f"{keyauth_url}/v1/token",
                        json={"client_id": party.client_id, "client_secret": party.client_secret},
                    )
                    party.token = renewed.json()["access_token"]
                if answer.status_code in (429, 503):
                    await asyncio.sleep(float(answer.headers.get("Retry-After", "0.2")))

        await asyncio.gather(*(one(i, p) for i, p in enumerate(parties)))


def load(
    work: Path,
    *,
    clients: int = 50,
    seconds: float = 300,
    n_params: int = 100_000,
    profile: str | None = None,
    pool_size: int = 8,
) -> LoadResult:
    admin = new_admin_key()
    extra = {"profile": profile} if profile else {}
    with keyauth_service(work / "keyauth", admin, work / "keyauth.log", **extra) as keyauth:
        parties = [enroll(keyauth.url, admin, f"load-{i}") for i in range(clients)]
        prof = parties[0].profile
        layout = make_layout(n_params, prof)
        pool = [
            update_envelope(parties[0], layout, random_blocks(layout, prof, s) * 1e-3, 0)[1]
            for s in range(pool_size)
        ]
        with server_service(
            keyauth.url,
            work / "server",
            work / "server.log",
            client_updates_per_minute="0",
            target_updates="100000000",
            # The default max_staleness (64): a post based too far back is a 409, and
            # receipts older than the window are forgotten (memory stays flat).
            # Room in the apply queue for every client: admission never has to say 503.
            max_queued_updates=str(max(16, clients + 14)),
        ) as server:
            start_job(server.url, parties[0], layout, random_blocks(layout, prof, 1))
            assert server.process is not None
            pid = server.process.pid
            samples: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    samples.append(rss_bytes(pid) / 2**20)
                    done.wait(1.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            latencies: list[float] = []
            statuses: dict[int, int] = {}
            transport_errors: list[str] = []
            t0 = time.perf_counter()
            asyncio.run(
                _load_clients(
                    server.url,
                    keyauth.url,
                    parties,
                    pool,
                    seconds,
                    latencies,
                    statuses,
                    transport_errors,
                )
            )
            elapsed = time.perf_counter() - t0
            done.set()
            sampler.join()
            applied = httpx.get(f"{server.url}/v1/status", timeout=30).json()["updates_applied"]
    lat = np.asarray(latencies) * 1000
    return LoadResult(
        clients=clients,
        seconds=elapsed,
        n_params=n_params,
        requests=len(latencies),
        accepted=statuses.get(202, 0),
        by_status=statuses,
        rps=len(latencies) / elapsed,
        updates_per_s=int(applied) / elapsed,
        p50_ms=float(np.percentile(lat, 50)) if lat.size else math.nan,
        p99_ms=float(np.percentile(lat, 99)) if lat.size else math.nan,
        server_5xx=sum(v for s, v in statuses.items() if s >= 500),
        server_busy_503=statuses.get(503, 0),
        transport_errors=len(transport_errors),
        transport_error_kinds={k: transport_errors.count(k) for k in set(transport_errors)},
        rss_first_mb=samples[0] if samples else math.nan,
        # after the first 5 % of the run: the pools, caches and queue are filled by then
        rss_warm_mb=samples[len(samples) // 20 + 1] if len(samples) > 2 else math.nan,
        rss_last_mb=samples[-1] if samples else math.nan,
        rss_max_mb=max(samples) if samples else math.nan,
        rss_samples=samples,
    )


# --------------------------------------------------------------------------------------
# 4. Secrets: the server's disk and memory hold no secret key; logs hold no credential


# --------------------------------------------------------------------------------------
# Slow clients (slowloris): connections that never finish their request


@dataclass
class SlowResult:
    service: str
    protocol: str  # "deadlines" (hefl_http.protocol) or "bare" (uvicorn's own h11)
    connections: int
    opened: int
    held_after_s: float
    still_open_in_headers: int  # of opened // 2 stopped inside their headers
    still_open_in_body: int  # of the others, stopped inside a declared body
    legit_p50_ms: float  # GET /healthz on fresh connections while the slow ones are held
    legit_failures: int
    rss_before_mb: float
    rss_held_mb: float


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def slow_clients(
    work: Path, *, service: str, protocol: str, connections: int, hold: float
) -> SlowResult:
    """Open ``connections`` requests that never finish; count those still open after ``hold`` s.

    Half stop inside their headers, half inside a declared body. Meanwhile a well-behaved
    client asks ``/healthz`` on fresh connections.
    """
    admin = new_admin_key()
    args = ("--http", "h11") if protocol == "bare" else ()
    quiet = ("--log-level", "warning")
    with ExitStack() as stack:
        keyauth = stack.enter_context(
            keyauth_service(
                work / "keyauth",
                admin,
                work / "keyauth.log",
                uvicorn_args=(*quiet, *args) if service == "keyauth" else quiet,
            )
        )
        target = keyauth
        if service == "fl_server":
            target = stack.enter_context(
                server_service(
                    keyauth.url, work / "server", work / "server.log", uvicorn_args=(*quiet, *args)
                )
            )
        assert target.process is not None
        pid = target.process.pid
        rss_before = rss_bytes(pid) / 2**20
        path = b"/v1/enroll" if service == "keyauth" else b"/v1/updates"
        socks: list[socket.socket] = []
        for k in range(connections):
            try:
                sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
                if k % 2:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                else:
                    sock.sendall(
                        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
                    )
                socks.append(sock)
            except OSError:
                break
        opened = len(socks)
        latencies: list[float] = []
        failures = 0
        start = time.monotonic()
        while time.monotonic() - start < hold:
            t0 = time.perf_counter()
            try:
                ok = httpx.get(f"{target.url}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                failures += 1
            time.sleep(0.5)
        rss_held = rss_bytes(pid) / 2**20
        in_headers = sum(_still_open(sock) for sock in socks[1::2])
        in_body = sum(_still_open(sock) for sock in socks[0::2])
        for sock in socks:
            sock.close()
    return SlowResult(
        service=service,
        protocol=protocol,
        connections=connections,
        opened=opened,
        held_after_s=hold,
        still_open_in_headers=in_headers,
        still_open_in_body=in_body,
        legit_p50_ms=float(np.median(latencies) * 1e3) if latencies else math.nan,
        legit_failures=failures,
        rss_before_mb=rss_before,
        rss_held_mb=rss_held,
    )


def secret_key_needles(secret_context: bytes, profile: crypto.CkksProfile) -> list[bytes]:
    """Distinctive windows of the secret key, as serialized and as SEAL holds it in memory."""
    import tenseal as ts
    import tenseal.sealapi as sealapi

    ctx = ts.context_from(secret_context)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "sk")
        ctx.secret_key().data.save(path)
        serialized = Path(path).read_bytes()
    # The raw key polynomial (NTT form, one u64 per coefficient per prime): what RAM holds.
    key = ctx.secret_key().data.data()
    coeffs = profile.poly_modulus_degree * (len(profile.coeff_mod_bit_sizes))
    raw = np.asarray([key[i] for i in range(coeffs)], dtype=np.uint64).tobytes()
    del sealapi
    needles = []
    for blob in (secret_context, serialized, raw):
        for start in (len(blob) // 4, len(blob) // 2, 3 * len(blob) // 4):
            needles.append(blob[start : start + 48])
    return needles


def readable_regions(pid: int) -> Iterator[tuple[int, int]]:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        span, perms = parts[0], parts[1]
        if not perms.startswith("r") or (len(parts) > 5 and parts[5] in ("[vvar]", "[vsyscall]")):
            continue
        lo, hi = (int(x, 16) for x in span.split("-"))
        yield lo, hi


def search_memory(pid: int, needles: list[bytes]) -> tuple[int, int]:
    """(hits, bytes scanned) of ``needles`` in the readable memory of process ``pid``."""
    hits = 0
    scanned = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, hi in readable_regions(pid):
            try:
                mem.seek(lo)
                chunk = mem.read(hi - lo)
            except (OSError, OverflowError, ValueError):
                continue
            if not chunk:
                continue
            scanned += len(chunk)
            hits += sum(chunk.count(n) for n in needles)
    return hits, scanned


def search_files(root: Path, needles: list[bytes]) -> tuple[int, int]:
    """(hits, files searched) of ``needles`` in every file under ``root``."""
    hits = files = 0
    for path in root.rglob("*"):
        if path.is_file():
            files += 1
            data = path.read_bytes()
            hits += sum(data.count(n) for n in needles)
    return hits, files


# --------------------------------------------------------------------------------------


@contextmanager
def _workdir(base: Path | None) -> Iterator[Path]:
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
        yield base
        return
    with tempfile.TemporaryDirectory(prefix="hefl-hostile-") as tmp:
        yield Path(tmp)


def _corpus_live(work: Path, seed: int) -> dict[str, Any]:
    admin = new_admin_key()
    with ExitStack() as stack:
        keyauth = stack.enter_context(
            keyauth_service(work / "keyauth", admin, work / "keyauth.log", profile=TEST_PROFILE)
        )
        party = enroll(keyauth.url, admin, "corpus")
        layout = make_layout(5000, party.profile)
        server = stack.enter_context(
            server_service(
                keyauth.url, work / "server", work / "server.log", client_updates_per_minute="0"
            )
        )
        initial = random_blocks(layout, party.profile, 3)
        start_job(server.url, party, layout, initial)
        before = httpx.get(f"{server.url}/v1/model", timeout=30)
        corpus = envelope_corpus(party, layout, random_bodies=200, seed=seed)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            result = run_corpus(
                lambda h: http.post(
                    "/v1/updates", content=h.body, headers={**party.auth, **h.headers}
                ),
                corpus,
            )
            after = http.get("/v1/model")
        version, model = decrypt_model(party, layout, after.content)
        assert server.alive()
    return {
        **result.__dict__,
        "model_bytes_unchanged": after.content == before.content,
        "version_after": version,
        "max_model_change": float(np.max(np.abs(model - initial))),
    }


def _fuzz_live(work: Path, examples: int) -> dict[str, Any]:
    import schemathesis  # a dev tool: only the fuzzing part needs it

    admin = new_admin_key()
    with ExitStack() as stack:
        keyauth = stack.enter_context(
            keyauth_service(work / "keyauth", admin, work / "keyauth.log", profile=TEST_PROFILE)
        )
        server = stack.enter_context(
            server_service(
                keyauth.url, work / "server", work / "server.log", client_updates_per_minute="0"
            )
        )
        party = enroll(keyauth.url, admin, "fuzz")
        layout = make_layout(3000, party.profile)
        start_job(server.url, party, layout, random_blocks(layout, party.profile, 0))
        before = httpx.get(f"{server.url}/v1/model").content
        start = time.perf_counter()
        calls: dict[str, dict[str, int]] = {}
        for name, url, headers in (
            ("keyauth", keyauth.url, {**party.auth, "X-Admin-Key": admin}),
            ("fl_server", server.url, party.auth),
        ):
            schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
            calls[f"{name} with credentials"] = fuzz_api(schema, headers, examples)
            calls[f"{name} without"] = fuzz_api(schema, {}, examples)
        unchanged = httpx.get(f"{server.url}/v1/model").content == before
        alive = server.alive() and keyauth.alive()
    return {
        "calls": {k: sum(v.values()) for k, v in calls.items()},
        "operations": {k: len(v) for k, v in calls.items()},
        "server_5xx": 0,  # fuzz_api raises on the first 5xx or non-problem refusal
        "model_bytes_unchanged": unchanged,
        "services_alive": alive,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 s of load, fewer kills")
    parser.add_argument("--work", type=Path, help="keep logs and state here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parts",
        default="corpus,fuzz,crash,kcrash,load,slow",
        help="comma-separated subset; a subset is merged into the existing JSON",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {"quick": quick}
    previous = RESULTS_DIR / "hostile.json"
    if parts != {"corpus", "fuzz", "crash", "kcrash", "load", "slow"} and previous.exists():
        kept = json.loads(previous.read_text())
        results = {k: v for k, v in kept.items() if k not in ("machine", "when")}
    with _workdir(args.work) as work:
        if "corpus" in parts:
            corpus = _corpus_live(work / "corpus", args.seed)
            results["corpus"] = corpus
            print("## Hostile update envelopes (live uvicorn)\n")
            print(
                format_table(
                    ["inputs", "4xx", "5xx", "failures", "model bytes unchanged", "version after"],
                    [
                        [
                            corpus["tried"],
                            sum(v for s, v in corpus["by_status"].items() if 400 <= s < 500),
                            sum(v for s, v in corpus["by_status"].items() if s >= 500),
                            len(corpus["failures"]),
                            corpus["model_bytes_unchanged"],
                            corpus["version_after"],
                        ]
                    ],
                )
            )
            print("\ncodes:", corpus["by_code"], "\n")

        if "fuzz" in parts:
            fuzzed = _fuzz_live(work / "fuzz", 100 if quick else 500)
            results["fuzz"] = fuzzed
            print("## OpenAPI fuzzing (schemathesis strategies, live uvicorn)\n")
            print(
                format_table(
                    ["run", "operations", "calls"],
                    [[k, fuzzed["operations"][k], v] for k, v in fuzzed["calls"].items()],
                )
            )
            print(f"\nno 5xx; model bytes unchanged: {fuzzed['model_bytes_unchanged']}\n")

        if "crash" in parts:
            crash = crash_server(work / "crash", kills=5 if quick else 20, seed=args.seed)
            results["crash_server"] = crash.__dict__
            print("## fl_server kill -9 under load\n")
            print(
                format_table(
                    [
                        "kills",
                        "acknowledged",
                        "applied (version)",
                        "applied (status)",
                        "duplicates",
                        "retries",
                        "max error",
                        "bound",
                        "s",
                    ],
                    [
                        [
                            crash.kills,
                            crash.acknowledged,
                            crash.applied_version,
                            crash.applied_count,
                            crash.duplicates_answered,
                            crash.retries,
                            crash.max_error,
                            crash.error_bound,
                            crash.seconds,
                        ]
                    ],
                )
            )
        if "kcrash" in parts:
            kcrash = crash_keyauth(work / "kcrash", kills=5 if quick else 20, seed=args.seed)
            results["crash_keyauth"] = kcrash.__dict__
            print("\n## keyauth kill -9 during enrollment\n")
            print(
                format_table(
                    [
                        "kills",
                        "enrolled (201/200)",
                        "no answer",
                        "201 on retry",
                        "re-delivered (200)",
                        "orphaned",
                        "listed",
                        "unexplained",
                        "credentials working",
                        "tokens dead once confirmed",
                        "secret context unchanged",
                    ],
                    [
                        [
                            kcrash.kills,
                            kcrash.enrolled_acknowledged,
                            kcrash.answers_lost,
                            kcrash.completed_on_retry,
                            kcrash.redelivered,
                            kcrash.orphaned,
                            kcrash.clients_listed,
                            kcrash.unexplained_clients,
                            kcrash.credentials_working,
                            kcrash.tokens_dead_after_confirmation,
                            kcrash.secret_context_unchanged,
                        ]
                    ],
                )
            )
        if "load" in parts:
            loaded = load(work / "load", clients=50, seconds=60 if quick else 300)
            results["load"] = loaded.__dict__
            print("\n## Load: 50 clients, 1e5 parameters\n")
            print(
                format_table(
                    [
                        "s",
                        "requests",
                        "req/s",
                        "updates/s",
                        "p50 ms",
                        "p99 ms",
                        "5xx",
                        "transport err",
                        "RSS first MB",
                        "RSS after 5 % MB",
                        "RSS last MB",
                        "RSS max MB",
                    ],
                    [
                        [
                            loaded.seconds,
                            loaded.requests,
                            loaded.rps,
                            loaded.updates_per_s,
                            loaded.p50_ms,
                            loaded.p99_ms,
                            loaded.server_5xx,
                            loaded.transport_errors,
                            loaded.rss_first_mb,
                            loaded.rss_warm_mb,
                            loaded.rss_last_mb,
                            loaded.rss_max_mb,
                        ]
                    ],
                )
            )
            print("\nstatuses:", loaded.by_status)
        if "slow" in parts:
            slow = [
                slow_clients(
                    work / f"slow-{service}-{protocol}",
                    service=service,
                    protocol=protocol,
                    connections=500 if quick else 2000,
                    hold=15 if quick else 30,
                )
                for service in ("keyauth", "fl_server")
                for protocol in ("bare", "deadlines")
            ]
            results["slow"] = [r.__dict__ for r in slow]
            print("\n## Slow clients: requests that never finish\n")
            print(
                format_table(
                    [
                        "service",
                        "uvicorn protocol",
                        "opened",
                        "held for s",
                        "open: in headers",
                        "open: in body",
                        "healthz p50 ms",
                        "healthz failed",
                        "RSS before / held MB",
                    ],
                    [
                        [
                            r.service,
                            r.protocol,
                            r.opened,
                            r.held_after_s,
                            f"{r.still_open_in_headers} / {r.opened // 2}",
                            f"{r.still_open_in_body} / {r.opened - r.opened // 2}",
                            r.legit_p50_ms,
                            r.legit_failures,
                            f"{r.rss_before_mb:.0f} / {r.rss_held_mb:.0f}",
                        ]
                        for r in slow
                    ],
                )
            )
    out = write_json("hostile", results)
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
