"""Large-model benchmark: one 100M-parameter update through the real services, and memory.

Run: ``python -m benchmarks.large_model --params 100000000`` (``--quick`` for 1e6
parameters). Starts a real keyauth and a real fl_server under uvicorn on loopback ports.
A client, in its own process, encrypts the initial model and one update block by block
into files (``fl_client.updates.write_model`` / ``write_update``), uploads each streaming
from its file, waits until the server has ingested the update and published it, then
downloads the model and decrypts it as it streams in (``decrypt_model_stream``), and
checks it against ``initial + weight * update``. Then ``--updates`` more updates are sent
one after the other to time ingest. The server's resident memory (its process and all its
children, from ``/proc``) is sampled throughout; the client reports its own peak.

Prints a table and writes ``benchmarks/results/large_model.json``, with pass/fail against
two goals: server peak <= 2.2 x the model's ciphertext bytes + 300 MB, client peak <= 2 x
the plaintext model (float64 blocks) + one block's ciphertext.

``--shards N`` passes ``FLSERVER_SHARDS=N`` to the server (for a server that has shards).

``--e2e N`` runs, instead, two hospitals (``hefl-client train`` processes, the bundled
heart-disease data of Cleveland and Hungary) training an MLP of about N parameters for
``--rounds`` rounds each through the real services, and reports the wall time, the
seconds per update and the peak memory of the server and of each hospital
(``benchmarks/results/large_model_e2e.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import crypto
import fl_server.shards as shards_module
from benchmarks._report import format_table, write_json
from fl_client.updates import (
    CompressionConfig,
    decrypt_model_stream,
    model_limits,
    write_model,
    write_update,
)
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.enrollment import client_command, enroll_hospital
from harness.parties import Values, enroll, job_url, make_layout
from harness.services import keyauth_service, server_service
from harness.studies import study_json
from hefl_study import spec_from_mapping, spec_to_json

ADMIN_KEY = "bench-admin-key-" + "l" * 24
JOB = "large"
QUIET = ("--log-level", "warning", "--no-access-log")
CHUNK = 1 << 20
MB = 1e6

_HEADERS = crypto.ENVELOPE_HEADERS
_UID_AT = _HEADERS.prefix.size + _HEADERS.update.offset("update_id")
_UID = _HEADERS.update.field_codec("update_id")


# -- memory, from /proc --------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces: the parent id follows the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children(p)
    return tree


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants, now."""
    return sum(_status_kb(p, "VmRSS") for p in process_tree(pid)) * 1024


class RssSampler:
    """Samples a process tree's resident memory every ``interval`` seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), tree_rss(self.pid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((r for t, r in self.samples if start <= t <= end), default=0)

    def high_water(self) -> int:
        """The sum of each process's own peak (``VmHWM``): an upper bound of the tree's."""
        return sum(_status_kb(p, "VmHWM") for p in process_tree(self.pid)) * 1024


# -- the client, in its own process --------------------------------------------------


def _block_values(seed: int, index: int, size: int, scale: float) -> Values:
    return np.random.default_rng([seed, index]).normal(0.0, scale, size)


def _values(layout: crypto.ModelLayout, seed: int, scale: float) -> Values:
    """Seeded values block by block (so any block can be made again alone), 0 in the
    canary and padding slots."""
    out = np.empty((layout.n_blocks, layout.block_size))
    for i in range(layout.n_blocks):
        out[i] = _block_values(seed, i, layout.block_size, scale)
    out[layout.zero_mask] = 0.0
    return out


def _file_chunks(path: Path, head: bytes | None = None) -> Iterator[bytes]:
    """The file's bytes in chunks; ``head`` replaces its first ``len(head)`` bytes."""
    with path.open("rb") as f:
        if head is not None:
            f.seek(len(head))
            yield head
        while chunk := f.read(CHUNK):
            yield chunk


def _upload(
    http: httpx.Client, method: str, url: str, path: Path, head: bytes | None = None
) -> httpx.Response:
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(path.stat().st_size),
    }
    return http.request(method, url, content=_file_chunks(path, head), headers=headers)


def _restamped_head(path: Path) -> bytes:
    """The update's head with a fresh update id: the same ciphertexts sent again as new."""
    with path.open("rb") as f:
        head = bytearray(f.read(_HEADERS.prefix.size + _HEADERS.update.size))
    _UID.pack_into(head, _UID_AT, uuid.uuid4().bytes)
    return bytes(head)


def _wait_published(url: str, viewer: str, version: int, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while read_status(url, viewer, JOB, timeout=60)["published_version"] < version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"version {version} was never published")
        time.sleep(0.05)


class _Phases:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def timed(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    def __init__(self, phases: _Phases, name: str) -> None:
        self.phases, self.name = phases, name

    def __enter__(self) -> None:
        self.start = time.time()

    def __exit__(self, *exc: object) -> None:
        end = time.time()
        self.phases.rows[self.name] = {
            "start": self.start,
            "end": end,
            "seconds": end - self.start,
            # the client's own peak so far: where its memory goes, phase by phase
            "client_peak_rss_bytes": _status_kb(os.getpid(), "VmHWM") * 1024,
        }


def client_run(config: dict[str, Any]) -> dict[str, Any]:
    """Everything the client does, timed by phase; its own peak memory at the end."""
    work = Path(config["work"])
    profile = crypto.get_profile(config["profile"])
    cipher = crypto.ClientCipher(Path(config["secret_context"]).read_bytes(), profile)
    layout = crypto.ModelLayout.from_json(Path(config["layout"]).read_bytes())
    auth = {"Authorization": f"Bearer {config['token']}"}
    url, viewer, key_epoch = config["url"], config["viewer"], config["key_epoch"]
    phases = _Phases()
    out: dict[str, Any] = {"baseline_rss_bytes": _status_kb(os.getpid(), "VmRSS") * 1024}
    with httpx.Client(timeout=3600, headers=auth) as http:
        initial_path, update_path = work / "initial.env", work / "update.env"
        initial = _values(layout, 1, 0.1)
        with phases.timed("encrypt initial model"), initial_path.open("wb") as f:
            out["initial_bytes"] = write_model(
                cipher, layout, initial, f, version=0, key_epoch=key_epoch
            )
        del initial
        with phases.timed("upload initial model (until 201)"):
            answer = _upload(http, "PUT", job_url(url, JOB, "/initial-model"), initial_path)
            assert answer.status_code == 201, answer.text
        initial_path.unlink()
        delta = _values(layout, 2, 0.01)
        with phases.timed("encrypt update"), update_path.open("wb") as f:
            written = write_update(
                cipher,
                layout,
                delta,
                None,
                CompressionConfig(),
                f,
                step=1.0,
                round_=0,
                base_version=0,
                key_epoch=key_epoch,
            )
        out["update_bytes"] = written.report.envelope_bytes
        del delta, written  # what was sent is delta itself (a dense update makes no copy)
        with phases.timed("upload update (until 202: durable)"):
            answer = _upload(http, "POST", job_url(url, JOB, "/updates"), update_path)
            assert answer.status_code == 202, answer.text
            weight = float(answer.json()["weight"])
        with phases.timed("ingest (202 until published)"):
            _wait_published(url, viewer, 1)
        with phases.timed("download (bytes only)"):
            nbytes = 0
            with http.stream("GET", job_url(url, JOB, "/model")) as answer:
                assert answer.status_code == 200, answer.read()
                for chunk in answer.iter_bytes(CHUNK):
                    nbytes += len(chunk)
            out["model_bytes"] = nbytes
        with (
            phases.timed("download + decrypt (streamed)"),
            http.stream("GET", job_url(url, JOB, "/model")) as answer,
        ):
            limits = model_limits(layout, profile.max_block_bytes)
            head, model = decrypt_model_stream(cipher, answer.iter_bytes(CHUNK), limits, layout)
        out["model_version"] = head.version
        error = 0.0
        mask = layout.zero_mask
        for i in range(layout.n_blocks):  # block by block: no second copy of the model
            expected = _block_values(1, i, layout.block_size, 0.1) + weight * _block_values(
                2, i, layout.block_size, 0.01
            )
            expected[mask[i]] = 0.0
            error = max(error, float(np.max(np.abs(model[i] - expected))))
        del model
        out["max_abs_error"] = error
        out["error_bound"] = profile.error_bound(2)
        count = config["updates"]
        if count:
            with phases.timed(f"ingest {count} more updates, one uploader (until published)"):
                for _ in range(count):
                    answer = _upload(
                        http,
                        "POST",
                        job_url(url, JOB, "/updates"),
                        update_path,
                        _restamped_head(update_path),
                    )
                    assert answer.status_code == 202, answer.text
                _wait_published(url, viewer, 1 + count)
        update_path.unlink()
    out["phases"] = phases.rows
    out["peak_rss_bytes"] = _status_kb(os.getpid(), "VmHWM") * 1024
    return out


def client_only_run(params: int, work: Path) -> dict[str, Any]:
    """The client's side alone, without the services (a fresh key, no network): encrypt a
    model and an update of ``params`` parameters block by block into files, then decrypt
    the model file as it is read, in pieces; the client's own peak memory."""
    profile = crypto.DEFAULT_PROFILE
    baseline = _status_kb(os.getpid(), "VmRSS") * 1024
    cipher = crypto.ClientCipher(crypto.generate_key_material(profile).secret_context, profile)
    layout = make_layout(params, profile)
    phases = _Phases()
    initial_path, update_path = work / "initial.env", work / "update.env"
    initial = _values(layout, 1, 0.1)
    with phases.timed("encrypt model"), initial_path.open("wb") as f:
        model_bytes = write_model(cipher, layout, initial, f, version=0, key_epoch=1)
    del initial
    delta = _values(layout, 2, 0.01)
    with phases.timed("encrypt update"), update_path.open("wb") as f:
        written = write_update(
            cipher, layout, delta, None, CompressionConfig(), f,
            step=1.0, round_=0, base_version=0, key_epoch=1,
        )  # fmt: skip
    update_bytes = written.report.envelope_bytes
    del delta, written  # what was sent is delta itself (a dense update makes no copy)
    update_path.unlink()
    with phases.timed("decrypt model (streamed from its file)"):
        limits = model_limits(layout, profile.max_block_bytes)
        _, model = decrypt_model_stream(cipher, _file_chunks(initial_path), limits, layout)
    error = 0.0
    mask = layout.zero_mask
    for i in range(layout.n_blocks):
        expected = _block_values(1, i, layout.block_size, 0.1)
        expected[mask[i]] = 0.0
        error = max(error, float(np.max(np.abs(model[i] - expected))))
    del model
    initial_path.unlink()
    plaintext = layout.n_blocks * layout.block_size * 8
    peak = _status_kb(os.getpid(), "VmHWM") * 1024
    goal = 2 * plaintext + profile.max_block_bytes
    return {
        "profile": profile.name,
        "params": layout.total_params,
        "blocks": layout.n_blocks,
        "update_bytes": update_bytes,
        "model_bytes": model_bytes,
        "plaintext_model_bytes": plaintext,
        "phases": phases.rows,
        "max_abs_error": error,
        "error_bound": profile.error_bound(1),
        "client_baseline_rss_bytes": baseline,
        "client_peak_rss_bytes": peak,
        "client_goal_bytes": goal,
        "client_goal_met": peak <= goal,
    }


# -- the orchestration ---------------------------------------------------------------


def run(params: int, updates: int, shards: int | None, work: Path) -> dict[str, Any]:
    profile = crypto.DEFAULT_PROFILE
    with keyauth_service(
        work / "keyauth",
        ADMIN_KEY,
        work / "keyauth.log",
        uvicorn_args=QUIET,
        profile=profile.name,
        # one access token and one viewer token for the whole run, however long it takes
        access_token_ttl="86400",
        viewer_token_ttl="86400",
    ) as keyauth:
        party = enroll(keyauth.url, ADMIN_KEY, "bench-large")
        layout = make_layout(params, party.profile)
        settings = {"client_updates_per_minute": "0", "revocation_refresh": "0"}
        if shards is not None:
            settings["shards"] = str(shards)
        with server_service(
            keyauth.url,
            work / "server",
            work / "server.log",
            uvicorn_args=QUIET,
            tls=None,
            **settings,
        ) as server:
            assert server.process is not None
            admin = admin_token(keyauth.url, ADMIN_KEY)
            spec = study_json(
                JOB,
                profile=profile.name,
                staleness="constant",
                max_staleness=1_000_000,
                target_updates=1_000_000,
            )
            create_job(server.url, admin, spec)
            answer = httpx.put(
                job_url(server.url, JOB, "/layout"),
                content=layout.to_json(),
                headers=party.auth,
                timeout=60,
            )
            assert answer.status_code == 201, answer.text
            (work / "secret").write_bytes(party.secret_context)
            (work / "layout.json").write_bytes(layout.to_json())
            config = {
                "work": str(work),
                "url": server.url,
                "token": party.token,
                "viewer": viewer_token(keyauth.url, ADMIN_KEY),
                "secret_context": str(work / "secret"),
                "layout": str(work / "layout.json"),
                "profile": profile.name,
                "key_epoch": party.key_epoch,
                "updates": updates,
            }
            (work / "client.json").write_text(json.dumps(config))
            idle = tree_rss(server.process.pid)
            with RssSampler(server.process.pid) as sampler:
                done = subprocess.run(  # this very module, as the client
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.large_model",
                        "--client",
                        str(work / "client.json"),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(
                        f"the client failed:\n{done.stderr[-4000:]}\n{server.tail()}"
                    )
                client = json.loads(done.stdout.strip().splitlines()[-1])
                high_water = sampler.high_water()
    for row in client["phases"].values():
        row["server_peak_rss_bytes"] = sampler.peak(row["start"], row["end"])
    model_bytes = client["model_bytes"]
    plaintext = layout.n_blocks * layout.block_size * 8
    server_peak = sampler.peak()
    client_peak = client["peak_rss_bytes"]
    server_goal = 2.2 * model_bytes + 300 * MB
    client_goal = 2 * plaintext + profile.max_block_bytes
    extra = client["phases"].get(f"ingest {updates} more updates, one uploader (until published)")
    return {
        "profile": profile.name,
        "params": layout.total_params,
        "blocks": layout.n_blocks,
        "shards": shards,
        "server": f"FLSERVER_SHARDS={shards}" if shards else "single process (no shards)",
        "cpu_count": os.cpu_count(),
        "update_bytes": client["update_bytes"],
        "initial_model_bytes": client["initial_bytes"],
        "model_bytes": model_bytes,
        "plaintext_model_bytes": plaintext,
        "phases": client["phases"],
        "ingest_params_per_s": (updates * layout.total_params / extra["seconds"])
        if extra
        else None,
        "max_abs_error": client["max_abs_error"],
        "error_bound": client["error_bound"],
        "server_idle_rss_bytes": idle,
        "server_peak_rss_bytes": server_peak,
        "server_high_water_bytes": high_water,
        "server_goal_bytes": server_goal,
        "server_goal_met": server_peak <= server_goal,
        "client_peak_rss_bytes": client_peak,
        "client_baseline_rss_bytes": client["baseline_rss_bytes"],
        "client_goal_bytes": client_goal,
        "client_goal_met": client_peak <= client_goal,
    }


E2E_SITES = ("cleveland", "hungary")


def _mlp_params(hidden: int, inputs: int = 13) -> int:
    """Parameters of ``fl_client.models.MlpModel`` with one output: two hidden layers of
    ``hidden`` units and a head, weights and biases."""
    return (inputs + 1) * hidden + (hidden + 1) * hidden + hidden + 1


def _mlp_hidden(params: int, inputs: int = 13) -> int:
    """The smallest hidden width of at least ``params`` parameters."""
    h = 1
    while _mlp_params(h, inputs) < params:
        h += 1
    return h


def run_e2e(params: int, rounds: int, work: Path) -> dict[str, Any]:
    """Two hospitals train an MLP of about ``params`` parameters, ``rounds`` each."""
    hidden = _mlp_hidden(params)
    spec = spec_from_mapping(
        {
            "name": JOB,
            "description": f"benchmark: heart disease, an MLP of {params:,} parameters",
            "profile": crypto.DEFAULT_PROFILE.name,
            "model": {"name": "mlp", "args": {"hidden": hidden}, "seed": 0},
            "data": {"task": "binary", "classes": [0, 1], "input_shape": [13]},
            "training": {"optimizer": "sgd", "lr": 0.01, "batch_size": 32, "local_steps": 5},
            "server": {"max_training": 8},
            "stop": {"target_updates": rounds * len(E2E_SITES)},
        }
    )
    logs = work / "logs"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    samplers: dict[str, RssSampler] = {}
    with (
        keyauth_service(
            work / "keyauth", ADMIN_KEY, logs / "keyauth.log", uvicorn_args=QUIET
        ) as ka,
        server_service(
            ka.url,
            work / "server",
            logs / "server.log",
            uvicorn_args=QUIET,
            tls=None,
            client_updates_per_minute="0",
        ) as server,
    ):
        assert server.process is not None
        create_job(server.url, admin_token(ka.url, ADMIN_KEY), spec_to_json(spec))
        viewer = viewer_token(ka.url, ADMIN_KEY)
        for site in E2E_SITES:
            enroll_hospital(ka.url, ADMIN_KEY, site, work / "hospitals" / site)
        started = time.monotonic()
        samplers["server"] = RssSampler(server.process.pid, interval=0.2).__enter__()
        try:
            for site in E2E_SITES:
                command = client_command(
                    "train", "--server", server.url, "--job", JOB, "--data", "heart-disease",
                    "--site", site, "--state-dir", str(work / "hospitals" / site), "--json",
                )  # fmt: skip
                log = logs / f"client-{site}.jsonl"
                with log.open("ab") as out, log.with_suffix(".err").open("ab") as err:
                    procs[site] = subprocess.Popen(command, stdout=out, stderr=err)  # our CLI
                samplers[site] = RssSampler(procs[site].pid, interval=0.2).__enter__()
            deadline = time.monotonic() + 3600
            while any(p.poll() is None for p in procs.values()):
                if time.monotonic() > deadline:
                    raise RuntimeError("the hospitals did not finish within an hour")
                time.sleep(0.5)
            wall = time.monotonic() - started
            failed = {s: p.returncode for s, p in procs.items() if p.returncode != 0}
            if failed:
                raise RuntimeError(f"hospitals exited with {failed}; see {logs}")
            status = read_status(server.url, viewer, JOB, timeout=60)
        finally:
            for sampler in samplers.values():
                sampler.__exit__()
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=30)
    updates = int(status["updates_applied"])
    return {
        "params_asked": params,
        "params": _mlp_params(hidden),
        "mlp_hidden": hidden,
        "sites": list(E2E_SITES),
        "rounds_per_site": rounds,
        "updates_applied": updates,
        "version": status["version"],
        "wall_seconds": wall,
        "seconds_per_update": wall / max(updates, 1),
        "server_peak_rss_bytes": samplers["server"].peak(),
        "client_peak_rss_bytes": {s: samplers[s].peak() for s in E2E_SITES},
        "cpu_count": os.cpu_count(),
    }


def _print(payload: dict[str, Any]) -> None:
    print(
        f"\n{payload['params']:,} parameters in {payload['blocks']:,} blocks, profile "
        f"{payload['profile']}, server: {payload['server']}, {payload['cpu_count']} CPUs\n"
    )
    sizes = [
        ["update envelope (bytes per update)", payload["update_bytes"] / MB],
        ["initial model envelope (client-encrypted)", payload["initial_model_bytes"] / MB],
        ["published model envelope (download)", payload["model_bytes"] / MB],
        ["plaintext model (float64 blocks)", payload["plaintext_model_bytes"] / MB],
    ]
    print(format_table(["what", "MB"], sizes))
    rows = [
        [
            name,
            row["seconds"],
            row["server_peak_rss_bytes"] / MB,
            row["client_peak_rss_bytes"] / MB,
        ]
        for name, row in payload["phases"].items()
    ]
    print()
    headers = ["phase", "seconds", "server peak RSS MB", "client peak RSS so far MB"]
    print(format_table(headers, rows))
    if payload["ingest_params_per_s"]:
        print(f"\ningest throughput: {payload['ingest_params_per_s']:.3g} params/s")
    print()
    memory = [
        [
            "server (all processes)",
            payload["server_peak_rss_bytes"] / MB,
            payload["server_goal_bytes"] / MB,
            "met" if payload["server_goal_met"] else "MISSED",
        ],
        [
            "client",
            payload["client_peak_rss_bytes"] / MB,
            payload["client_goal_bytes"] / MB,
            "met" if payload["client_goal_met"] else "MISSED",
        ],
    ]
    print(format_table(["peak RSS", "MB", "goal MB", "goal"], memory))
    print(
        f"\nserver idle {payload['server_idle_rss_bytes'] / MB:.0f} MB, client after its imports "
        f"{payload['client_baseline_rss_bytes'] / MB:.0f} MB; sum of the server's per-process "
        f"high-water marks {payload['server_high_water_bytes'] / MB:.0f} MB; decrypted "
        f"model max error {payload['max_abs_error']:.2e} (bound {payload['error_bound']:.2e})"
    )


def staging_cost(params: int, shards: int, repeats: int) -> dict[str, Any]:
    """Seconds to stage and add one update of ``params`` parameters on ``shards`` worker
    processes (0: in this process), held (loaded once, held until the add) against
    streamed (loaded and dropped, then loaded again and added block by block), and the
    backends' peak memory (the sum of the workers' high-water marks)."""
    profile = crypto.DEFAULT_PROFILE
    keys = crypto.generate_key_material(profile)
    client = crypto.ClientCipher(keys.secret_context, profile)
    n_blocks = -(-params // (profile.block_size - crypto.DEFAULT_CANARIES))
    rng = np.random.default_rng(0)
    model = [
        client.encrypt_model_block(rng.normal(0, 0.1, profile.block_size)) for _ in range(n_blocks)
    ]
    update = [
        client.encrypt_update_block(rng.normal(0, 0.01, profile.block_size))
        for _ in range(n_blocks)
    ]
    rows: dict[str, Any] = {}
    for how, limit in (("held", 1 << 62), ("streamed", 0)):
        backend: shards_module.ShardBackend
        if shards:
            backend = shards_module.ProcessBackend(
                keys.public_context, profile, shards, stream_above=limit
            )
        else:
            server = crypto.ServerCipher(keys.public_context, profile)
            backend = shards_module.InProcessBackend(server, stream_above=limit)
        try:
            backend.open(n_blocks)
            backend.install(backend.stage(enumerate(model), model=True))
            stage_s, add_s = [], []
            for _ in range(repeats):
                started = time.perf_counter()
                staged = backend.stage(enumerate(update))
                staged_at = time.perf_counter()
                backend.add(staged, 0.5)
                backend.serialize([0])  # waits until every shard is done
                stage_s.append(staged_at - started)
                add_s.append(time.perf_counter() - staged_at)
            pids = getattr(backend, "pids", [os.getpid()])
            rows[how] = {
                "stage_seconds": float(np.median(stage_s)),
                "add_seconds": float(np.median(add_s)),
                "high_water_bytes": sum(_high_water(pid) for pid in pids),
            }
        finally:
            backend.close()
    return {
        "params": params,
        "blocks": n_blocks,
        "shards": shards,
        "repeats": repeats,
        "update_bytes": sum(len(b) for b in update),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }


def _high_water(pid: int | None) -> int:
    """A process's peak resident memory (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e6 parameters")
    parser.add_argument("--params", type=int, default=None)
    parser.add_argument("--updates", type=int, default=2, help="more updates to time ingest")
    parser.add_argument("--shards", type=int, default=None, help="FLSERVER_SHARDS for the server")
    parser.add_argument(
        "--client-only", action="store_true", help="the client's side alone, no services"
    )
    parser.add_argument("--e2e", type=int, default=None, metavar="PARAMS")
    parser.add_argument("--rounds", type=int, default=3, help="--e2e: rounds per hospital")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--client", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--staging",
        action="store_true",
        help="time staging an update held against streamed (--params, --shards), no services",
    )
    args = parser.parse_args(argv)
    if args.staging:
        params = args.params or 10_000_000
        cost = staging_cost(params, 2 if args.shards is None else args.shards, repeats=3)
        rows = [
            [
                how,
                r["stage_seconds"],
                r["add_seconds"],
                r["stage_seconds"] + r["add_seconds"],
                r["high_water_bytes"] / MB,
            ]
            for how, r in cost["rows"].items()
        ]
        print(
            f"\nstaging one update of {params:,} parameters ({cost['update_bytes'] / MB:,.0f} MB), "
            f"{cost['shards']} shards, median of {cost['repeats']}\n"
        )
        headers = ["staged", "stage s", "add s", "stage + add s", "shards' peak RSS MB"]
        print(format_table(headers, rows))
        print(f"\nwrote {write_json('large_model_staging', cost, args.out_dir)}")
        return cost
    if args.client is not None:
        result = client_run(json.loads(args.client.read_text()))
        print(json.dumps(result))
        return result
    if args.e2e is not None:
        with tempfile.TemporaryDirectory(prefix="hefl-large-e2e-") as tmp:
            e2e = run_e2e(args.e2e, args.rounds, Path(tmp))
        rows = [["server", e2e["server_peak_rss_bytes"] / MB]] + [
            [f"hospital {s}", b / MB] for s, b in e2e["client_peak_rss_bytes"].items()
        ]
        print(
            f"\ntwo hospitals, an MLP of hidden width {e2e['mlp_hidden']} ("
            f"{e2e['params']:,} parameters), {e2e['updates_applied']} updates applied in "
            f"{e2e['wall_seconds']:.1f} s ({e2e['seconds_per_update']:.1f} s per update, "
            f"{e2e['cpu_count']} CPUs)\n"
        )
        print(format_table(["process", "peak RSS MB"], rows))
        print(f"\nwrote {write_json('large_model_e2e', e2e, args.out_dir)}")
        return e2e
    params = args.params or (1_000_000 if args.quick else 100_000_000)
    if args.client_only:
        with tempfile.TemporaryDirectory(prefix="hefl-large-client-") as tmp:
            alone = client_only_run(params, Path(tmp))
        rows = [
            [name, row["seconds"], row["client_peak_rss_bytes"] / MB]
            for name, row in alone["phases"].items()
        ]
        print(
            f"\nthe client alone: {alone['params']:,} parameters in {alone['blocks']:,} blocks; "
            f"update {alone['update_bytes'] / MB:,.0f} MB, model {alone['model_bytes'] / MB:,.0f}"
            f" MB, plaintext {alone['plaintext_model_bytes'] / MB:,.0f} MB\n"
        )
        print(format_table(["phase", "seconds", "client peak RSS so far MB"], rows))
        verdict = "met" if alone["client_goal_met"] else "MISSED"
        print(
            f"\nclient peak {alone['client_peak_rss_bytes'] / MB:,.0f} MB (after its imports "
            f"{alone['client_baseline_rss_bytes'] / MB:,.0f} MB), goal "
            f"{alone['client_goal_bytes'] / MB:,.0f} MB: {verdict}; max error "
            f"{alone['max_abs_error']:.2e} (bound {alone['error_bound']:.2e})"
        )
        print(f"\nwrote {write_json('large_model_client', alone, args.out_dir)}")
        return alone
    with tempfile.TemporaryDirectory(prefix="hefl-large-") as tmp:
        payload = run(params, args.updates, args.shards, Path(tmp))
    _print(payload)
    name = "large_model" if args.shards is None else f"large_model_shards{args.shards}"
    out = write_json(name, payload, args.out_dir)
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
