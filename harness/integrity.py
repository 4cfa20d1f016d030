"""Corrupted updates injected into a real study, next to a twin server that never gets them.

``run_study`` starts keyauth and two fl_servers under uvicorn: the *job* server A, where
real hospitals (the ``fl_client`` library's ``Runner`` over HTTP) train on the bundled
heart-disease data, and its *twin* B, the same job on the same keyauth (constant
staleness, buffer 1, no stop in reach). Every hospital's request goes through a
``MirrorTransport``: writes to A are serialized by one lock, and each layout, initial
model and honest update A accepts is posted to B as well (the update's base version
restamped to B's version; with constant staleness its weight is 1 on both). So B's
version ``m`` is, bit for bit, the model the first ``m`` honest updates make: the model
that never received the bad update. An attacker (an enrolled client) posts one corrupted
update to A only, right after A accepted honest update ``inject_after``; it answers the
probes of its own update truthfully.

The kinds of corruption (``bad_update``):

* ``flip`` (a): a valid update with one bit of its ciphertext body flipped, where the
  server still loads it;
* ``other_key`` (b): a block encrypted under another key authority's key of the same
  profile;
* ``range`` (n): an honest ciphertext of the largest values a client may encrypt
  (``profile.max_magnitude`` in every slot, canaries too): the model it makes decrypts
  out of range. (An accepted ciphertext cannot decrypt to NaN or inf: the server refuses
  any scale but the profile's, and at that scale a value is bounded by the modulus.)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import crypto
from fl_client import ClientSettings, Runner, enroll
from fl_client.events import Event, ProgressBar
from fl_client.output import Reporter
from fl_client.rounds.loop import RunSummary
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.corpus import flip_bit
from harness.enrollment import enrollment_token
from harness.parties import TEST_PROFILE, Party, job_url
from harness.parties import enroll as enroll_party
from harness.services import ServiceProcess, keyauth_service, new_admin_key, server_service
from harness.studies import study_json

__all__ = [
    "CORRUPTIONS",
    "IntegrityRun",
    "Mirror",
    "MirrorTransport",
    "bad_update",
    "run_study",
]

CORRUPTIONS = {
    "flip": "(a) one flipped bit",
    "other_key": "(b) another keyauth's key",
    "range": "(n) values out of range",
}
JOB = "heart"
SITES = ("cleveland", "hungary")

_HEADERS = crypto.ENVELOPE_HEADERS
_BASE_AT = _HEADERS.prefix.size + _HEADERS.update.offset("base_version")
_UID_AT = _HEADERS.prefix.size + _HEADERS.update.offset("update_id")


# -- the bad updates ---------------------------------------------------------------------


def bad_update(
    kind: str, party: Party, layout: crypto.ModelLayout, base_version: int, public_context: bytes
) -> tuple[str, bytes]:
    """An update of ``kind`` (``CORRUPTIONS``) by ``party`` on ``base_version``, corrupting
    block 0: (update id, envelope). ``public_context`` is keyauth's keyless context."""
    profile = party.profile
    values = np.where(layout.zero_mask, 0.0, 1e-3)
    if kind == "range":
        values = np.full_like(values, profile.max_magnitude)
    blocks = [party.cipher.encrypt_update_block(row) for row in values]
    if kind == "flip":
        blocks[0] = flip_bit(blocks[0], crypto.ServerCipher(public_context, profile))
    elif kind == "other_key":
        other = crypto.ClientCipher(crypto.generate_key_material(profile).secret_context, profile)
        blocks[0] = other.encrypt_update_block(values[0])
    elif kind != "range":
        raise ValueError(f"unknown corruption {kind!r}; known: {sorted(CORRUPTIONS)}")
    uid = uuid.uuid4()
    update = crypto.EncryptedUpdate(
        layout.fingerprint,
        base_version,
        party.key_epoch,
        uid,
        tuple(crypto.CipherBlock(i, b) for i, b in enumerate(blocks)),
    )
    return str(uid), crypto.update_to_bytes(update)


def _header(envelope: bytes) -> tuple[str, int]:
    """An update envelope's update id and base version."""
    base = _HEADERS.update.field_codec("base_version").unpack_from(envelope, _BASE_AT)[0]
    uid = _HEADERS.update.field_codec("update_id").unpack_from(envelope, _UID_AT)[0]
    return str(uuid.UUID(bytes=uid)), int(base)


def _with_base(envelope: bytes, base_version: int) -> bytes:
    data = bytearray(envelope)
    _HEADERS.update.field_codec("base_version").pack_into(data, _BASE_AT, base_version)
    return bytes(data)


# -- the mirror --------------------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    """An update A accepted: who sent it, its base and version at A, and B's version after
    it (``None`` for the bad one, which B never gets)."""

    update_id: str
    sender: str
    base_version: int
    version: int
    at: float
    twin_version: int | None


@dataclass(frozen=True)
class SeenRepair:
    """A repair as the mirror saw it: A's record, the honest updates A had accepted by
    then, when, and A's model at the repaired version."""

    record: dict[str, Any]
    honest: int
    at: float
    model: bytes


@dataclass
class Mirror:
    """What the hospitals' transports share: A and B, one lock for writes, and records.

    ``checks`` are the versions hospitals said they checked, in order: a metrics report
    (checked good) or an integrity report on a version (good or not; not the probes of
    one sender's own update).
    """

    server_url: str
    twin_url: str
    job: str
    viewer: str  # a viewer token: the status is for token holders
    inject_after: int | None = None
    inject: Callable[[int], Posted] | None = None
    after_repair: Callable[[SeenRepair], None] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    updates: list[Posted] = field(default_factory=list)
    bad: Posted | None = None
    metrics: list[tuple[str, int]] = field(default_factory=list)
    reports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    checks: list[tuple[str, int, bool]] = field(default_factory=list)
    twin_models: dict[int, bytes] = field(default_factory=dict)
    repairs: list[SeenRepair] = field(default_factory=list)
    twin_version: int = 0

    @property
    def honest(self) -> list[Posted]:
        return [p for p in self.updates if p.twin_version is not None]

    def _twin(self, url: httpx.URL) -> str:
        # the path only: B is answered the plain receipt, never a hospital's next lease
        return self.twin_url + url.path

    def _served(self, url: str, auth: str, version: int) -> bytes:
        """The model ``url`` serves once it holds ``version`` (exactly that version)."""
        deadline = time.monotonic() + 60
        while True:
            answer = httpx.get(
                job_url(url, self.job, "/model"), headers={"Authorization": auth}, timeout=30
            )
            served = int(answer.headers.get("X-Hefl-Model-Version", -1))
            if served >= version:
                assert served == version, f"{url} serves version {served}, expected {version}"
                return answer.content
            assert time.monotonic() < deadline, f"{url} never served version {version}"
            time.sleep(0.02)

    def status(self) -> dict[str, Any]:
        return read_status(self.server_url, self.viewer, self.job, timeout=30)

    def seen(self, request: httpx.Request, response: httpx.Response, sender: str) -> None:
        """Called under the lock with each write A answered."""
        path, auth = request.url.path, request.headers.get("Authorization", "")
        if request.method == "PUT" and response.status_code == 201:
            # The layout and the initial model: B gets the same bytes.
            twin = httpx.put(
                self._twin(request.url), content=request.content, headers={"Authorization": auth}
            )
            assert twin.status_code == 201, twin.text
            if path.endswith("/initial-model"):
                self.twin_models[0] = self._served(self.twin_url, auth, 0)
        elif path.endswith("/leases"):
            self.pulled(request, response)
        elif path.endswith("/updates") and response.status_code in (200, 202):
            # 200: the answer carries the next lease and model, the receipt in a header
            leased = response.status_code == 200
            receipt = (
                json.loads(response.headers["X-Hefl-Update-Receipt"]) if leased else response.json()
            )
            if not receipt["duplicate"]:
                self._mirror_update(request, receipt, sender, auth)
                report = request.headers.get("X-Hefl-Metrics")
                if report is not None:  # the metrics that came with the update
                    self._vouched(sender, int(json.loads(report)["version"]), auth)
            if leased:
                self.pulled(request, response)
        elif path.endswith("/metrics") and response.status_code == 202:
            self._vouched(sender, int(json.loads(request.content)["version"]), auth)
        elif path.endswith("/integrity") and response.status_code == 202:
            report = json.loads(request.content)
            self.reports.append((sender, report))
            if report["update_id"] is None:
                self.checks.append((sender, int(report["version"]), bool(report["ok"])))
            self._look_for_repair(auth)

    def _vouched(self, sender: str, version: int, auth: str) -> None:
        self.metrics.append((sender, version))
        self.checks.append((sender, version, True))
        # A metrics report vouches for its version: it may complete the search.
        self._look_for_repair(auth)

    def _mirror_update(
        self, request: httpx.Request, receipt: dict[str, Any], sender: str, auth: str
    ) -> None:
        update_id, base = _header(request.content)
        twin = httpx.post(
            self._twin(request.url),
            content=_with_base(request.content, self.twin_version),
            headers={"Authorization": auth},
            timeout=60,
        )
        assert twin.status_code == 202, twin.text
        assert twin.json()["weight"] == receipt["weight"] == 1.0, (twin.text, receipt)
        self.twin_version = int(twin.json()["version"])
        self.twin_models[self.twin_version] = self._served(self.twin_url, auth, self.twin_version)
        self.updates.append(
            Posted(
                update_id,
                sender,
                base,
                int(receipt["version"]),
                time.monotonic(),
                self.twin_version,
            )
        )

    def pulled(self, request: httpx.Request, response: httpx.Response) -> None:
        """Called under the lock with each model a hospital pulled to train on (``GET
        …/model``, ``POST …/leases``, or an update's answer that carried it): once
        ``inject_after`` honest updates are in, the bad update follows this pull, so this
        hospital trains on a good version and its update lands after the bad one."""
        ready = self.inject is not None and self.inject_after is not None
        if not ready or self.bad is not None or len(self.honest) < (self.inject_after or 0):
            return
        if response.status_code != 200 or "version" in request.url.params:
            return  # a probe, a refused lease, or a model the hospital holds already (304)
        assert self.inject is not None
        self.bad = self.inject(int(response.headers["X-Hefl-Model-Version"]))
        self.updates.append(self.bad)

    def _look_for_repair(self, auth: str) -> None:
        repairs = self.status()["integrity"]["repairs"]
        for record in repairs[len(self.repairs) :]:
            model = self._served(self.server_url, auth, int(record["version"]))
            seen = SeenRepair(record, len(self.honest), time.monotonic(), model)
            self.repairs.append(seen)
            if self.after_repair is not None:
                self.after_repair(seen)


class MirrorTransport(httpx.BaseTransport):
    """A hospital's transport to A: reads pass; writes are serialized and seen by ``mirror``."""

    def __init__(self, mirror: Mirror, sender: str) -> None:
        self._mirror = mirror
        self._sender = sender
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            if not request.url.path.endswith("/model"):
                return self._inner.handle_request(request)
            with self._mirror.lock:
                response = self._inner.handle_request(request)
                response.read()
                self._mirror.pulled(request, response)
            return response
        request.read()
        with self._mirror.lock:
            response = self._inner.handle_request(request)
            response.read()
            self._mirror.seen(request, response, self._sender)
        return response

    def close(self) -> None:
        self._inner.close()


# -- the hospitals -----------------------------------------------------------------------


class Recorder:
    """An event sink that keeps every event and shows nothing."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._quiet = Reporter("quiet")

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def bar(
        self, total: float | None, desc: str, unit: str = "it", *, unit_scale: bool = False
    ) -> AbstractContextManager[ProgressBar]:
        return self._quiet.bar(total, desc, unit, unit_scale=unit_scale)


def enroll_hospital(keyauth_url: str, admin_key: str, site: str, state_dir: Path) -> None:
    """Enroll bundled hospital ``site`` with a one-time token, its state in ``state_dir``."""
    settings = ClientSettings(state_dir=state_dir, keyauth_url=keyauth_url, output="quiet")
    enroll(settings, enrollment_token(keyauth_url, admin_key, site), reporter=Recorder())


def hospital_settings(
    state_dir: Path, keyauth_url: str, server_url: str, site: str, **extra: Any
) -> ClientSettings:
    """A quiet one-thread client of job ``JOB`` on bundled heart-disease hospital ``site``."""
    return ClientSettings(
        state_dir=state_dir,
        keyauth_url=keyauth_url,
        server_url=server_url,
        job=JOB,
        data="heart-disease",
        site=site,
        threads=1,
        output="quiet",
        **extra,
    )


def _answer_own_probes(
    mirror: Mirror,
    attacker: Party,
    layout: Callable[[], crypto.ModelLayout],
    stop: threading.Event,
) -> None:
    """The attacker answers the probes of its own update truthfully (a client with a bug,
    not a liar: a liar would only go unquarantined, FLSERVER_PROBE_TIMEOUT)."""
    answered: set[tuple[int, str]] = set()
    transport = MirrorTransport(mirror, "attacker")
    with httpx.Client(transport=transport, headers=attacker.auth, timeout=60) as http:
        while not stop.wait(0.1):
            job = http.get(job_url(mirror.server_url, mirror.job)).json()
            probe = (job.get("integrity") or {}).get("probe")
            if not probe or probe.get("client_id") != attacker.client_id:
                continue
            key = (int(probe["version"]), str(probe["update_id"]))
            if key in answered:
                continue
            served = http.get(
                job_url(mirror.server_url, mirror.job, "/model"),
                params={"version": probe["version"], "update": probe["update_id"]},
            )
            if served.status_code != 200:
                continue
            blocks = _blocks(served.content, layout(), attacker.profile)
            values = np.stack([attacker.cipher.decrypt_block(b) for b in blocks])
            found = crypto.check_model(layout(), attacker.profile, values)
            body = {
                "version": probe["version"],
                "ok": found.ok,
                "check": found.check,
                "blocks": list(found.blocks),
                "update_id": probe["update_id"],
            }
            http.post(job_url(mirror.server_url, mirror.job, "/integrity"), json=body)
            answered.add(key)


# -- one run -----------------------------------------------------------------------------


@dataclass
class IntegrityRun:
    """One study with (or, ``kind`` None, without) a corrupted update, and what it showed."""

    kind: str | None
    buffer_size: int
    target_updates: int
    mirror: Mirror
    status: dict[str, Any]
    summaries: dict[str, RunSummary]
    events: dict[str, list[Event]]
    injected_at: float | None
    refused_after_repair: tuple[int, str] | None
    repaired_max_abs: float | None
    repaired_identical: bool | None
    final_max_abs: float
    final_identical: bool
    seconds: float

    @property
    def auroc(self) -> dict[str, float]:
        """Each hospital's final AUROC on its held-out rows."""
        return {
            site: float(s.final_eval.metrics["auroc"])
            for site, s in self.summaries.items()
            if s.final_eval is not None
        }

    def figures(self) -> dict[str, Any]:
        """The benchmark's row: what was injected, detected, repaired, lost and kept."""
        integrity = self.status["integrity"]
        bad = self.mirror.bad
        seen = self.mirror.repairs
        repair = seen[0] if seen else None
        failed = [r for _, r in self.mirror.reports if not r["ok"] and r["update_id"] is None]
        kept = []
        if bad is not None and repair is not None:
            after = self.mirror.updates[self.mirror.updates.index(bad) + 1 :]
            kept = [
                p
                for p in after
                if p.twin_version is not None and p.version < int(repair.record["version"])
            ]
        return {
            "kind": self.kind,
            "buffer_size": self.buffer_size,
            "injected": int(bad is not None),
            "detected": int(bool(failed)),
            "first_failed_version": failed[0]["version"] if failed else None,
            "bad_version": None if bad is None else bad.version,
            "repaired": len(integrity["repairs"]),
            "removed": integrity["updates_removed"],
            "quarantined": [q["client_name"] for q in integrity["quarantined"]],
            "versions_lost": None if repair is None else repair.record["versions_lost"],
            "kept_after_bad": len(kept),
            "injection_to_repair_s": (
                None
                if repair is None or self.injected_at is None
                else round(repair.at - self.injected_at, 3)
            ),
            "repaired_max_abs": self.repaired_max_abs,
            "repaired_identical": self.repaired_identical,
            "final_max_abs": self.final_max_abs,
            "final_identical": self.final_identical,
            "refused_after_repair": self.refused_after_repair,
            "final_version": self.status["version"],
            "state": self.status["state"],
            "stop_reason": self.status["stop_reason"],
            "auroc": self.auroc,
            "seconds": round(self.seconds, 1),
        }


def _blocks(data: bytes, layout: crypto.ModelLayout, profile: crypto.CkksProfile) -> list[bytes]:
    limits = crypto.EnvelopeLimits(layout.n_blocks, profile.max_block_bytes)
    return [b.data for b in crypto.model_from_bytes(data, limits).blocks]


def _compare(party: Party, layout: crypto.ModelLayout, a: bytes, b: bytes) -> tuple[float, bool]:
    """Max abs difference of two decrypted models, and whether their ciphertexts are equal."""
    mine, twin = _blocks(a, layout, party.profile), _blocks(b, layout, party.profile)
    diff = max(
        float(np.max(np.abs(party.cipher.decrypt_block(x) - party.cipher.decrypt_block(y))))
        for x, y in zip(mine, twin, strict=True)
    )
    return diff, mine == twin


@contextmanager
def _services(
    work: Path, admin_key: str
) -> Iterator[tuple[ServiceProcess, ServiceProcess, ServiceProcess]]:
    with ExitStack() as stack:
        keyauth = stack.enter_context(
            keyauth_service(work / "keyauth", admin_key, work / "keyauth.log", profile=TEST_PROFILE)
        )
        servers = [
            stack.enter_context(
                server_service(
                    keyauth.url,
                    work / name,
                    work / f"{name}.log",
                    uvicorn_args=("--log-level", "warning"),
                    client_updates_per_minute="0",
                    probe_timeout="30",
                )
            )
            for name in ("server", "twin")
        ]
        yield keyauth, servers[0], servers[1]


def run_study(
    work: Path,
    kind: str | None,
    *,
    buffer_size: int = 1,
    target_updates: int = 24,
    inject_after: int = 6,
    sites: tuple[str, ...] = SITES,
    timeout: float = 300,
) -> IntegrityRun:
    """Train job ``heart`` at A with ``sites``' hospitals to ``target_updates``, the
    attacker's ``kind`` of update (``CORRUPTIONS``, or None for a clean run) posted to A
    after honest update ``inject_after``; everything the run showed."""
    started = time.monotonic()
    admin_key = new_admin_key()
    with _services(work, admin_key) as (keyauth, server, twin):
        token = admin_token(keyauth.url, admin_key)
        # The same study at both, but for the twin's buffer (1, so that each prefix of the
        # honest updates is a version of it) and its stop rule (out of reach). Uniform
        # weights: the twin sees a different history, and data weighting depends on it.
        spec: dict[str, Any] = {
            "profile": TEST_PROFILE,
            "inputs": 13,
            "staleness": "constant",
            "weighting": "uniform",
        }
        create_job(
            server.url,
            token,
            study_json(JOB, buffer_size=buffer_size, target_updates=target_updates, **spec),
        )
        create_job(twin.url, token, study_json(JOB, buffer_size=1, target_updates=10**6, **spec))
        for site in sites:
            enroll_hospital(keyauth.url, admin_key, site, work / site)
        attacker = enroll_party(keyauth.url, admin_key, "attacker")
        public_context = httpx.get(f"{keyauth.url}/v1/keys/public-context").content
        mirror = Mirror(
            server.url,
            twin.url,
            JOB,
            viewer_token(keyauth.url, admin_key),
            inject_after=inject_after if kind else None,
        )
        layout_box: list[crypto.ModelLayout] = []
        injected: list[float] = []
        refused: list[tuple[int, str]] = []

        def layout() -> crypto.ModelLayout:
            if not layout_box:
                answer = httpx.get(job_url(server.url, JOB, "/layout"), headers=attacker.auth)
                layout_box.append(crypto.ModelLayout.from_json(answer.content))
            return layout_box[0]

        def inject(version: int) -> Posted:
            assert kind is not None
            uid, envelope = bad_update(kind, attacker, layout(), version, public_context)
            answer = httpx.post(
                job_url(server.url, JOB, "/updates"), content=envelope, headers=attacker.auth
            )
            assert answer.status_code == 202, answer.text
            injected.append(time.monotonic())
            return Posted(
                uid, "attacker", version, int(answer.json()["version"]), injected[0], None
            )

        def after_repair(seen: SeenRepair) -> None:
            # The attacker's next update, an honest one on the repaired model.
            values = np.where(layout().zero_mask, 0.0, 1e-3)
            blocks = tuple(
                crypto.CipherBlock(i, attacker.cipher.encrypt_update_block(row))
                for i, row in enumerate(values)
            )
            update = crypto.EncryptedUpdate(
                layout().fingerprint,
                int(seen.record["version"]),
                attacker.key_epoch,
                uuid.uuid4(),
                blocks,
            )
            answer = httpx.post(
                job_url(server.url, JOB, "/updates"),
                content=crypto.update_to_bytes(update),
                headers=attacker.auth,
            )
            refused.append((answer.status_code, str(answer.json().get("code"))))

        mirror.inject = inject
        mirror.after_repair = after_repair
        recorders = {site: Recorder() for site in sites}
        stop = threading.Event()

        def train(site: str) -> RunSummary:
            settings = hospital_settings(
                work / site, keyauth.url, server.url, site, integrity_poll=0.2
            )
            transport = MirrorTransport(mirror, site)
            with Runner(settings, server_transport=transport, reporter=recorders[site]) as runner:
                return runner.run()

        with ThreadPoolExecutor(max_workers=len(sites) + 1) as pool:
            prober = pool.submit(_answer_own_probes, mirror, attacker, layout, stop)
            runs = {site: pool.submit(train, site) for site in sites}
            try:
                summaries = {site: run.result(timeout=timeout) for site, run in runs.items()}
            finally:
                stop.set()
            prober.result(timeout=30)
        with mirror.lock:
            status = mirror.status()
            final = mirror._served(server.url, f"Bearer {attacker.token}", int(status["version"]))
            honest = len(mirror.honest)
            twin_final = mirror.twin_models[honest]
        layout()  # fetched while the server is up
    final_max_abs, final_identical = _compare(attacker, layout(), final, twin_final)
    repaired_max_abs = repaired_identical = None
    if mirror.repairs:
        seen = mirror.repairs[0]
        repaired_max_abs, repaired_identical = _compare(
            attacker, layout(), seen.model, mirror.twin_models[seen.honest]
        )
    return IntegrityRun(
        kind,
        buffer_size,
        target_updates,
        mirror,
        status,
        summaries,
        {site: r.events for site, r in recorders.items()},
        injected[0] if injected else None,
        refused[0] if refused else None,
        repaired_max_abs,
        repaired_identical,
        final_max_abs,
        final_identical,
        time.monotonic() - started,
    )
