"""A live asynchronous hefl run: the services on loopback, a job, one client per hospital.

keyauth and fl_server run under uvicorn on loopback, the administrator creates a job from
a spec built here, and one ``python -m fl_client train --job`` process per hospital
trains, the slowness set with ``--step-delay``.

While it runs, a watcher downloads the encrypted model (``GET /v1/jobs/{job}/model``, with
one hospital's access token) whenever its version changes and stamps it with the wall
clock. After the run the snapshots are decrypted with that hospital's secret context (the
benchmark borrows its state directory, as the demo does) and evaluated on every
hospital's test split.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import crypto
from benchmarks.suite._sim import Curve
from fl_client.data import ClientData
from fl_client.errors import ClientError
from fl_client.models import ModelFactory, build_model
from fl_client.reference import evaluate_federation, pooled_eval
from fl_client.state import LocalState
from fl_client.training import TrainConfig
from fl_client.transport import ClientOptions, KeyauthClient, TokenManager
from fl_client.updates import decrypt_model, model_limits
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.enrollment import client_command, enroll_hospital
from harness.services import ServiceError, keyauth_service, new_admin_key, server_service
from hefl_study import StudySpec, spec_from_mapping, spec_to_json


@dataclass(frozen=True)
class LiveSpec:
    """One live configuration: a job of a bundled dataset, its model and local training.

    The bundled dataset is the job's data factory (``data.input_shape``), so every
    hospital's rows are exactly those of the in-process runs it is compared with.
    """

    data: str
    sites: Sequence[str]
    model: str
    step_delays: Sequence[float]
    target_updates: int
    config: TrainConfig
    input_shape: tuple[int, ...]
    classes: Sequence[int]
    seed: int = 0
    timeout: float = 600.0
    job: str = "live"
    # the job's [server] section (the default policy, or e.g. rounds)
    server: Mapping[str, Any] = field(default_factory=lambda: {"max_training": 32})
    # above 0: once the job is done, each hospital exports the model adapted to its rows
    # for this many epochs (``hefl-client export --adapt-epochs N``)
    adapt_epochs: int = 0

    def study(self) -> StudySpec:
        """The job's spec: the model, its seed, the local training and the stop rule."""
        task = "binary" if len(self.classes) == 2 else "multiclass"
        training: dict[str, Any] = {
            "optimizer": self.config.optimizer,
            "lr": self.config.lr,
            "momentum": self.config.momentum,
            "batch_size": self.config.batch_size,
        }
        if self.config.steps is not None:
            training["local_steps"] = self.config.steps
        else:
            training["local_epochs"] = self.config.epochs
        return spec_from_mapping(
            {
                "name": self.job,
                "description": f"benchmark: {self.data}, {self.model}",
                "model": {"name": self.model, "seed": self.seed},
                "data": {
                    "task": task,
                    "classes": list(self.classes),
                    "input_shape": list(self.input_shape),
                },
                "training": training,
                "server": dict(self.server),
                "stop": {"target_updates": self.target_updates},
            }
        )


@dataclass
class LiveResult:
    curve: Curve
    wall_seconds: float
    first_to_last_seconds: float
    status: dict[str, Any]
    final_per_site: list[float]
    final_accuracy: float
    all_active: tuple[float, int] | None = None
    # per hospital, with ``adapt_epochs``: export.json's adaptation, and the exported
    # model's accuracy on the hospital's test split, scored here (``adapted_accuracy``)
    adapted: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Watcher(threading.Thread):
    """Downloads each new model version with its wall-clock time, as a hospital would."""

    def __init__(self, url: str, keyauth_url: str, state_dir: Path, started: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        # the access tokens of the enrolled hospital whose state directory this is
        credential = LocalState(state_dir).load_credential()
        self.keyauth = KeyauthClient(ClientOptions(keyauth_url, timeout=10))
        self.tokens = TokenManager(self.keyauth, credential.client_id, credential.client_secret)
        self.started = started
        self.snapshots: list[tuple[float, int, bytes]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        etag: str | None = None
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                try:
                    headers = {"Authorization": f"Bearer {self.tokens.get()}"}
                    if etag:
                        headers["If-None-Match"] = etag
                    answer = http.get(self.url, headers=headers)
                except (httpx.TransportError, ClientError):
                    answer = None
                if answer is not None and answer.status_code == 200:
                    etag = answer.headers.get("ETag")
                    version = int(answer.headers.get("X-Hefl-Model-Version", "0"))
                    now = time.monotonic() - self.started
                    self.snapshots.append((now, version, answer.content))
                self.stop.wait(0.2)
        self.keyauth.close()


def run_live(
    spec: LiveSpec,
    root: Path,
    datas: Sequence[ClientData],
    factory: ModelFactory,
    progress: Callable[[str], None],
    client_server_url: Callable[[str, str], str] | None = None,
) -> LiveResult:
    """Run ``spec`` to its stop rule; ``client_server_url(site, url)`` is the fl_server URL
    that hospital's client is given (the benchmark of Flower puts a byte-counting relay
    there), the server's own by default."""
    root.mkdir(parents=True, exist_ok=True)
    admin_key = new_admin_key()
    logs = root / "logs"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (
            keyauth_service(root / "keyauth", admin_key, logs / "keyauth.log") as ka,
            server_service(
                ka.url, root / "server", logs / "fl_server.log", client_updates_per_minute="0"
            ) as server,
        ):
            progress(f"live: keyauth {ka.url}, fl_server {server.url}")
            token = admin_token(ka.url, admin_key)
            viewer = viewer_token(ka.url, admin_key)  # lasts the run, unlike an admin token
            create_job(server.url, token, spec_to_json(spec.study()))
            job_url = f"{server.url}/v1/jobs/{spec.job}"
            # the hospitals enroll at once (each is a process that imports torch)
            with ThreadPoolExecutor(len(spec.sites)) as pool:
                list(
                    pool.map(
                        lambda site: enroll_hospital(
                            ka.url, admin_key, site, root / "hospitals" / site
                        ),
                        spec.sites,
                    )
                )
            started = time.monotonic()
            watcher = _Watcher(
                f"{job_url}/model", ka.url, root / "hospitals" / spec.sites[0], started
            )
            watcher.start()
            for site, delay in zip(spec.sites, spec.step_delays, strict=True):
                url = client_server_url(site, server.url) if client_server_url else server.url
                command = client_command(
                    "train",
                    *_hospital_args(spec, root, url, site),
                    "--step-delay",
                    str(delay),
                    "--json",
                )
                log = logs / f"client-{site}.jsonl"
                with log.open("ab") as out, log.with_suffix(".err").open("ab") as err:
                    procs.append(subprocess.Popen(command, stdout=out, stderr=err))
            progress(
                "live: training "
                + ", ".join(
                    f"{s} ({d * 1e3:.0f} ms/step)"
                    for s, d in zip(spec.sites, spec.step_delays, strict=True)
                )
            )
            status: dict[str, Any] = {}
            all_active: tuple[float, int] | None = None
            deadline = time.monotonic() + spec.timeout
            last = -1
            while True:
                if not server.alive():
                    raise ServiceError(f"fl_server died:\n{server.tail()}")
                with contextlib.suppress(httpx.TransportError, ServiceError, ValueError):
                    status = read_status(server.url, viewer, spec.job, timeout=5)
                version = int(status.get("version", 0))
                if version // 10 != last // 10:
                    elapsed = time.monotonic() - started
                    progress(f"live: version {version}/{spec.target_updates} at {elapsed:.1f} s")
                    last = version
                clients = status.get("clients", {}).values()
                if (
                    all_active is None
                    and len(clients) >= len(spec.sites)
                    and all(c.get("updates_applied", 0) >= 1 for c in clients)
                ):
                    all_active = (time.monotonic() - started, version)
                running = [p for p in procs if p.poll() is None]
                if status.get("state") == "done" and not running:
                    break
                if not running and status.get("state") != "done":
                    raise ServiceError(
                        "every client exited before the job was done; see " + str(logs)
                    )
                if time.monotonic() > deadline:
                    raise ServiceError(f"live run did not finish in {spec.timeout:.0f} s")
                time.sleep(0.2)
            wall = time.monotonic() - started
            time.sleep(0.5)  # let the watcher fetch the final publication
            watcher.stop.set()
            watcher.join(timeout=15)
            status = read_status(server.url, viewer, spec.job, timeout=5)
            adapted = _export_adapted(spec, root, server.url, datas, progress)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=15)
    result = _evaluate_snapshots(
        watcher.snapshots,
        root / "hospitals" / spec.sites[0],
        datas,
        factory,
        wall,
        status,
        progress,
    )
    result.all_active = all_active
    result.adapted = adapted
    return result


def _hospital_args(spec: LiveSpec, root: Path, server_url: str, site: str) -> list[str]:
    """One hospital's ``hefl-client`` options: the server, the job, its data, its state."""
    return [
        "--server",
        server_url,
        "--job",
        spec.job,
        "--data",
        spec.data,
        "--site",
        site,
        "--state-dir",
        str(root / "hospitals" / site),
    ]


def _export_adapted(
    spec: LiveSpec,
    root: Path,
    server_url: str,
    datas: Sequence[ClientData],
    progress: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """With ``spec.adapt_epochs``: every hospital's ``hefl-client export --adapt-epochs``
    of the done job (the CLI, in parallel), the exported model scored on its test split."""
    if spec.adapt_epochs < 1:
        return {}
    from fl_client.export import load_exported
    from fl_client.training import evaluate

    def export(site: str) -> dict[str, Any]:
        out = root / "exports" / site
        command = client_command(
            "export",
            *_hospital_args(spec, root, server_url, site),
            "--out",
            str(out),
            "--adapt-epochs",
            str(spec.adapt_epochs),
            "--json",
        )
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return {"error": "the export took over 300 s"}
        if done.returncode != 0:
            return {"error": done.stderr.strip()}
        adaptation: dict[str, Any] = json.loads(done.stdout)["adaptation"]
        # scored here too, from the exported file: the export must say what it wrote
        model = load_exported(out).model
        adaptation["adapted_accuracy"] = evaluate(
            model, datas[spec.sites.index(site)].test
        ).accuracy
        return adaptation

    # a failed export is recorded, not raised: the run's other results stand
    with ThreadPoolExecutor(len(spec.sites)) as pool:
        records = dict(zip(spec.sites, pool.map(export, spec.sites), strict=True))
    progress(
        f"live: adapted {spec.adapt_epochs} epochs at home: "
        + ", ".join(
            f"{s} {r['adapted_accuracy']:.4f}" if "error" not in r else f"{s} failed: {r['error']}"
            for s, r in records.items()
        )
    )
    return records


def _evaluate_snapshots(
    snapshots: list[tuple[float, int, bytes]],
    state_dir: Path,
    datas: Sequence[ClientData],
    factory: ModelFactory,
    wall: float,
    status: dict[str, Any],
    progress: Callable[[str], None],
) -> LiveResult:
    loaded = LocalState(state_dir).load_secret_context(1)
    if loaded is None:
        raise ServiceError(f"no secret context in {state_dir}")
    profile_name, secret = loaded
    profile = crypto.get_profile(profile_name)
    cipher = crypto.ClientCipher(secret, profile)
    model = build_model(factory, datas[0].input_shape, datas[0].n_classes, 0)
    layout = crypto.build_layout(model.state_dict(), profile.block_size)
    limits = model_limits(layout, profile.max_block_bytes)
    curve = Curve("hefl async (live services)")
    per_site: list[float] = []
    applied = [(t, v) for t, v, _ in snapshots if v >= 1]
    first = applied[0][0] if applied else 0.0
    for t, version, body in snapshots:
        blocks = decrypt_model(cipher, crypto.model_from_bytes(body, limits), layout)
        results = evaluate_federation(factory, layout, blocks, [(d, {}) for d in datas])
        per_site = [r.accuracy for r in results]
        curve.add(version, 0, t, pooled_eval(results).accuracy)
    curve.per_site = per_site
    last = snapshots[-1][0] if snapshots else wall
    progress(f"live: {len(snapshots)} model versions decrypted; final accuracy {curve.final:.4f}")
    return LiveResult(
        curve=curve,
        wall_seconds=wall,
        first_to_last_seconds=last - first,
        status=status,
        final_per_site=per_site,
        final_accuracy=curve.final,
    )
