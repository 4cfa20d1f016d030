"""Server ingest benchmark: encrypted updates through HTTP against the raw crypto operation.

Run: ``python -m benchmarks.server_ingest`` (``--quick`` for a smoke run). Starts a real
keyauth and a real fl_server under uvicorn on loopback ports, enrolls uploaders, and
measures params/s of acknowledged (durable) updates with N concurrent uploaders, for each
number of shard worker processes (``FLSERVER_SHARDS``), and the throughput of 2 shards
over 1. In the same run, on the same ciphertexts, it times the raw ``crypto``
deserialize + weighted add, and each piece of the server's per-update work, so the
overhead can be attributed. Prints markdown tables and writes
``benchmarks/results/server_ingest.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

import crypto
from benchmarks._report import best_of, format_table, write_json
from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.parties import job_url
from harness.services import keyauth_service, server_service
from harness.studies import study_json

# Where the CPU of an update goes: the HTTP process, its shard workers, the fork server and
# resource tracker, and the uploaders (this process).
_PARTS = ("http", "shards", "helpers", "uploaders")
ADMIN_KEY = "bench-admin-key-" + "b" * 24
JOB = "ingest"
# Logging every request would slow the server down and be timed with it.
QUIET = ("--log-level", "warning", "--no-access-log")


def _enroll(keyauth: str, n: int) -> tuple[list[dict[str, str]], bytes, crypto.CkksProfile]:
    """Credentials of ``n`` enrolled uploaders, and the secret context (for encrypting)."""
    enrolled: list[dict[str, str]] = []
    secret, profile = b"", crypto.DEFAULT_PROFILE
    with httpx.Client(base_url=keyauth, timeout=60) as http:
        for i in range(n):
            issued = http.post(
                "/v1/enrollment-tokens",
                json={"client_name": f"bench-{i}"},
                headers={"X-Admin-Key": ADMIN_KEY},
            ).json()
            creds = http.post("/v1/enroll", json={"token": issued["token"]}).json()
            enrolled.append(creds)
            if i == 0:
                (token,) = _tokens(keyauth, enrolled)
                response = http.get(
                    "/v1/keys/secret-context", headers={"Authorization": f"Bearer {token}"}
                )
                secret = response.content
                profile = crypto.get_profile(response.headers["X-Hefl-Profile"])
    return enrolled, secret, profile


def _tokens(keyauth: str, enrolled: list[dict[str, str]]) -> list[str]:
    """Fresh access tokens (they last minutes; a run of several shard counts lasts longer)."""
    with httpx.Client(base_url=keyauth, timeout=60) as http:
        return [
            http.post(
                "/v1/token",
                json={"client_id": c["client_id"], "client_secret": c["client_secret"]},
            ).json()["access_token"]
            for c in enrolled
        ]


def _envelope(layout: crypto.ModelLayout, key_epoch: int, blocks: list[bytes]) -> bytes:
    """An update of every block under a fresh id (base version 0: staleness is constant)."""
    update = crypto.EncryptedUpdate(
        layout.fingerprint,
        0,
        key_epoch,
        uuid.uuid4(),
        tuple(crypto.CipherBlock(i, b) for i, b in enumerate(blocks)),
    )
    return crypto.update_to_bytes(update)


def measure_raw(
    server: crypto.ServerCipher, model_blocks: list[bytes], updates: list[list[bytes]], count: int
) -> float:
    """Mean seconds per update over ``count`` updates, one after the other, like a server.

    One run, timed the way the HTTP runs are (not best-of), so the two compare fairly.
    """
    model = [server.load_model_block(b) for b in model_blocks]
    start = time.perf_counter()
    for k in range(count):
        for m, b in zip(model, updates[k % len(updates)], strict=True):
            server.add_weighted(m, server.load_update_block(b), 1.0)
    return (time.perf_counter() - start) / count


def measure_parts(
    server: crypto.ServerCipher,
    layout: crypto.ModelLayout,
    model_blocks: list[bytes],
    updates: list[list[bytes]],
    repeats: int,
    tmp: Path,
) -> dict[str, float]:
    """Seconds per update of each piece of the server's work (best of ``repeats``)."""
    model = [server.load_model_block(b) for b in model_blocks]

    def deserialize() -> list[crypto.EncryptedBlock]:
        return [server.load_update_block(b) for b in updates[0]]

    t_add = float("inf")
    for _ in range(repeats):
        loaded = deserialize()
        start = time.perf_counter()
        for m, u in zip(model, loaded, strict=True):
            server.add_weighted(m, u, 1.0)
        t_add = min(t_add, time.perf_counter() - start)

    envelope = _envelope(layout, 1, updates[0])
    limits = crypto.EnvelopeLimits(layout.n_blocks, server.profile.max_block_bytes)
    wal = tmp / "wal.log"

    def log_append() -> None:
        with open(wal, "ab") as f:
            f.write(envelope)
            f.flush()
            os.fsync(f.fileno())

    return {
        "deserialize (raw)": best_of(repeats, deserialize),
        "weighted add (raw)": t_add,
        "parse envelope": best_of(repeats, lambda: crypto.update_from_bytes(envelope, limits)),
        "sha256 of envelope (off the GIL)": best_of(
            repeats, lambda: hashlib.sha256(envelope).digest()
        ),
        "log append + fsync (journal thread)": best_of(repeats, log_append),
        "serialize the model (publish)": best_of(
            repeats, lambda: [server.block_to_bytes(m) for m in model]
        ),
    }


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class CpuAccount:
    """CPU seconds spent by the HTTP process, its shard workers and the uploaders.

    Sampled at the start and the end of the timed window, from the kernel's per-process
    counters (psutil), so what each part costs per update is measured, not guessed. The
    uploaders are this process (its other threads idle meanwhile). The server's
    descendants are its shard workers (children of the fork server) and the fork server
    and resource tracker themselves (children of the server, counted apart as helpers).
    """

    def __init__(self, server_pid: int) -> None:
        self._server = psutil.Process(server_pid)
        self._self = psutil.Process()
        descendants = self._server.children(recursive=True)
        self._shards = [p for p in descendants if p.ppid() != server_pid]
        self._helpers = [p for p in descendants if p.ppid() == server_pid]
        self._start = self._sample()

    def _sample(self) -> dict[str, list[float]]:
        return {
            "http": [_cpu_seconds(self._server)],
            "shards": [_cpu_seconds(p) for p in self._shards],
            "helpers": [_cpu_seconds(p) for p in self._helpers],
            "uploaders": [_cpu_seconds(self._self)],
        }

    def seconds(self) -> dict[str, Any]:
        """CPU seconds of each part since this account was opened."""
        end = self._sample()
        used = {k: [b - a for a, b in zip(self._start[k], end[k], strict=True)] for k in end}
        return {
            "http": used["http"][0],
            "shards": sum(used["shards"]),
            "per_shard": used["shards"],
            "helpers": sum(used["helpers"]),
            "uploaders": used["uploaders"][0],
        }


def measure_http(
    url: str,
    server_pid: int,
    tokens: list[str],
    layout: crypto.ModelLayout,
    key_epoch: int,
    updates: list[list[bytes]],
    per_uploader: int,
    viewer: str,
) -> dict[str, Any]:
    """Wall time until every uploader's updates are acknowledged (202: durable); ``viewer``
    reads the status after."""
    n = len(tokens)
    # Envelopes are built before the clock starts: only the server's work is timed.
    batches = [
        [_envelope(layout, key_epoch, updates[(u + k) % len(updates)]) for k in range(per_uploader)]
        for u in range(n)
    ]
    warm = _envelope(layout, key_epoch, updates[0])
    latencies: list[float] = []
    failures: list[str] = []
    barrier = threading.Barrier(n + 1)

    def upload(token: str, batch: list[bytes]) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        with httpx.Client(base_url=url, timeout=600) as http:
            barrier.wait()
            for envelope in batch:
                start = time.perf_counter()
                response = http.post(
                    job_url("", JOB, "/updates"), content=envelope, headers=headers
                )
                latencies.append(time.perf_counter() - start)
                if response.status_code != 202:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    with httpx.Client(base_url=url, timeout=600) as http:
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        warmed = http.post(job_url("", JOB, "/updates"), content=warm, headers=headers)
        assert warmed.status_code == 202, warmed.text
    threads = [
        threading.Thread(target=upload, args=(t, b)) for t, b in zip(tokens, batches, strict=True)
    ]
    for thread in threads:
        thread.start()
    cpu = CpuAccount(server_pid)
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    used = cpu.seconds()
    if failures:
        raise RuntimeError(f"uploads refused: {failures[:3]}")
    count = n * per_uploader
    status = read_status(url, viewer, JOB, timeout=60)
    return {
        "uploaders": n,
        "updates": count,
        "seconds": wall,
        "params_per_s": count * layout.total_params / wall,
        "p50_latency_s": float(np.median(latencies)),
        "cpu_seconds": used,
        "cpu_ms_per_update": _per_update(used, count),
        "published_version": status["published_version"],
        "version": status["version"],
    }


def _per_update(used: dict[str, Any], count: int) -> dict[str, float]:
    out = {k: 1e3 * used[k] / count for k in _PARTS}
    out["total"] = sum(out.values())
    return out


def _pid(process: subprocess.Popen[bytes] | None) -> int:
    assert process is not None, "the server is not running"
    return process.pid


def _start_job(
    url: str,
    admin: str,
    token: str,
    layout: crypto.ModelLayout,
    key_epoch: int,
    model_blocks: list[bytes],
) -> None:
    # Constant staleness and a window past any run: every update counts the same.
    spec = study_json(
        JOB,
        profile=crypto.DEFAULT_PROFILE.name,
        staleness="constant",
        max_staleness=1_000_000,
        target_updates=1_000_000,
    )
    create_job(url, admin, spec)
    model = crypto.EncryptedModel(
        layout.fingerprint,
        0,
        key_epoch,
        tuple(crypto.CipherBlock(i, b) for i, b in enumerate(model_blocks)),
    )
    with httpx.Client(base_url=url, timeout=600) as http:
        auth = {"Authorization": f"Bearer {token}"}
        put = http.put(job_url("", JOB, "/layout"), content=layout.to_json(), headers=auth)
        assert put.is_success, put.text
        created = http.put(
            job_url("", JOB, "/initial-model"), content=crypto.model_to_bytes(model), headers=auth
        )
        assert created.status_code == 201, created.text


def _cores() -> int:
    # the cores this process may run on (what the server and its shards share too)
    return len(os.sched_getaffinity(0))


def _http_implementation() -> str:
    # uvicorn picks httptools when it is importable, else the pure-Python h11.
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def run(
    params: int,
    uploader_counts: list[int],
    per_uploader: int,
    runs: int,
    repeats: int,
    shard_counts: list[int],
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hefl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with keyauth_service(
            tmp / "keyauth",
            ADMIN_KEY,
            tmp / "keyauth.log",
            uvicorn_args=QUIET,
            profile=crypto.DEFAULT_PROFILE.name,
        ) as keyauth_process:
            keyauth = keyauth_process.url
            enrolled, secret, profile = _enroll(keyauth, max(uploader_counts))
            client = crypto.ClientCipher(secret, profile)
            public = httpx.get(f"{keyauth}/v1/keys/public-context")
            key_epoch = int(public.headers["X-Hefl-Key-Epoch"])
            server = crypto.ServerCipher(public.content, profile)
            layout = crypto.build_layout({"w": np.zeros(params, np.float32)}, profile.block_size)
            rng = np.random.default_rng(0)
            shape = (layout.n_blocks, profile.block_size)
            model_blocks = [client.encrypt_model_block(v) for v in rng.normal(0, 0.1, shape)]
            updates = [
                [client.encrypt_update_block(v) for v in rng.normal(0, 0.01, shape)]
                for _ in range(3)
            ]
            parts = measure_parts(server, layout, model_blocks, updates, repeats, tmp)
            count = per_uploader * max(uploader_counts)
            raw_runs = [
                layout.total_params / measure_raw(server, model_blocks, updates, count)
                for _ in range(runs)
            ]
            raw = float(np.median(raw_runs))
            rows = []
            for shards, n in ((s, n) for s in shard_counts for n in uploader_counts):
                measured = []
                for r in range(runs):
                    name = f"server-{shards}-{n}-{r}"
                    with server_service(
                        keyauth,
                        tmp / name,
                        tmp / f"{name}.log",
                        uvicorn_args=QUIET,
                        client_updates_per_minute="0",
                        max_queued_updates=str(max(16, 2 * n)),
                        revocation_refresh="0",
                        shards=str(shards),
                    ) as server_process:
                        url = server_process.url
                        admin = admin_token(keyauth, ADMIN_KEY)
                        tokens = _tokens(keyauth, enrolled[:n])
                        viewer = viewer_token(keyauth, ADMIN_KEY)
                        _start_job(url, admin, tokens[0], layout, key_epoch, model_blocks)
                        measured.append(
                            measure_http(
                                url,
                                _pid(server_process.process),
                                tokens[:n],
                                layout,
                                key_epoch,
                                updates,
                                per_uploader,
                                viewer,
                            )
                        )
                rates = [m["params_per_s"] for m in measured]
                median = float(np.median(rates))
                cpu = {
                    k: float(np.median([m["cpu_ms_per_update"][k] for m in measured]))
                    for k in measured[0]["cpu_ms_per_update"]
                }
                busy = [sum(m["cpu_seconds"][k] for k in _PARTS) / m["seconds"] for m in measured]
                rows.append(
                    {
                        "shards": shards,
                        "uploaders": n,
                        "updates_per_run": n * per_uploader,
                        "runs": runs,
                        "params_per_s": median,
                        "params_per_s_min": min(rates),
                        "params_per_s_max": max(rates),
                        "overhead_vs_raw": raw / median - 1,
                        "p50_latency_s": float(np.median([m["p50_latency_s"] for m in measured])),
                        "cpu_ms_per_update": cpu,
                        "cores_busy": float(np.median(busy)),
                        "measurements": measured,
                    }
                )
    return {
        "profile": profile.name,
        "params": layout.total_params,
        "blocks": layout.n_blocks,
        "update_bytes": sum(len(b) for b in updates[0]),
        "cpu_count": _cores(),
        "uvicorn_http": _http_implementation(),
        "raw_params_per_s": raw,
        "raw_params_per_s_runs": raw_runs,
        "raw_updates_per_run": count,
        "parts_ms_per_update": {k: v * 1e3 for k, v in parts.items()},
        "http": rows,
        "shard_speedup": _speedups(rows, layout.total_params, _cores()),
    }


def _speedups(rows: list[dict[str, Any]], params: int, cores: int) -> list[dict[str, Any]]:
    """Per uploader count, each shard count's throughput over one shard's (or, without a
    one-shard row, over the fewest shards'), and the most that ratio could be on ``cores``.

    The ceilings, from the CPU seconds measured per update (HTTP process, shards,
    uploaders): with every core busy, a server takes at most ``cores / total`` updates
    per second, and ``s`` shard workers (one thread of SEAL each) at most ``s / shards``.
    ``ratio_ceiling`` is the more sharded server's bound over the fewer shards' bound, so
    neither run's share of a busy machine enters it; ``ratio_ceiling_vs_measured`` is that
    bound over the fewer shards' measured rate.
    """
    out: list[dict[str, Any]] = []
    for n in sorted({r["uploaders"] for r in rows}):
        by_shards = {r["shards"]: r for r in rows if r["uploaders"] == n}
        base = 1 if 1 in by_shards else min(by_shards)
        base_rate = by_shards[base]["params_per_s"] / params
        base_bound = _cpu_bound(by_shards[base], cores)
        for s, row in sorted(by_shards.items()):
            if s == base:
                continue
            bound = _cpu_bound(row, cores)
            out.append(
                {
                    "uploaders": n,
                    "shards": s,
                    "over_shards": base,
                    "ratio": row["params_per_s"] / by_shards[base]["params_per_s"],
                    "cpu_bound_updates_per_s": bound,
                    "base_cpu_bound_updates_per_s": base_bound,
                    "ratio_ceiling": bound / base_bound,
                    "ratio_ceiling_vs_measured": bound / base_rate,
                }
            )
    return out


def _cpu_bound(row: dict[str, Any], cores: int) -> float:
    """The most updates per second the measured CPU per update allows (see ``_speedups``)."""
    cpu: dict[str, float] = row["cpu_ms_per_update"]
    bound = cores / (cpu["total"] / 1e3)
    if row["shards"] > 0 and cpu["shards"] > 0:
        bound = min(bound, row["shards"] / (cpu["shards"] / 1e3))
    return bound


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e5 parameters, one short run")
    parser.add_argument("--params", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None, help="runs per row (median reported)")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument(
        "--shards",
        type=int,
        nargs="+",
        default=[1, 2],
        help="FLSERVER_SHARDS values to measure (0: in the server's process)",
    )
    args = parser.parse_args(argv)
    params = args.params or (100_000 if args.quick else 1_000_000)
    counts = [1, 2] if args.quick else [1, 2, 4]
    per_uploader = 3 if args.quick else 12
    runs = args.runs or (1 if args.quick else 3)
    load_before = os.getloadavg()
    payload = run(params, counts, per_uploader, runs, 2 if args.quick else 5, args.shards)
    # Other work on the machine shifts every number: say how busy it was.
    payload["load_average_before_after"] = [load_before[0], os.getloadavg()[0]]

    print(
        f"\nServer work per update ({payload['params']:,} params, {payload['blocks']} blocks, "
        f"{payload['update_bytes'] / 1e6:.1f} MB, profile {payload['profile']}, "
        f"{payload['cpu_count']} CPUs, uvicorn with {payload['uvicorn_http']}):\n"
    )
    parts = payload["parts_ms_per_update"]
    print(format_table(["step", "ms per update"], [[k, v] for k, v in parts.items()]))
    raw = payload["raw_params_per_s"]
    table: list[list[Any]] = [
        ["raw crypto: deserialize + weighted add (one core)", "-", "-", raw, "-", 0.0, "-"]
    ]
    for row in payload["http"]:
        table.append(
            [
                "HTTP: POST /v1/jobs/{job}/updates until 202 (durable)",
                row["shards"],
                row["uploaders"],
                row["params_per_s"],
                f"{row['params_per_s_min']:.3g}-{row['params_per_s_max']:.3g}",
                100 * row["overhead_vs_raw"],
                row["p50_latency_s"] * 1e3,
            ]
        )
    load = payload["load_average_before_after"]
    print(f"\nMedian of {runs} run(s) per row (load average {load[0]:.1f} -> {load[1]:.1f}):\n")
    headers = [
        "path",
        "shards",
        "uploaders",
        "params/s",
        "range",
        "overhead vs raw %",
        "p50 latency ms",
    ]
    print(format_table(headers, table))
    print(f"\nCPU ms per update, median of the runs ({payload['cpu_count']} cores):\n")
    cpu_rows = [
        [
            row["shards"],
            row["uploaders"],
            *(row["cpu_ms_per_update"][k] for k in (*_PARTS, "total")),
            row["cores_busy"],
        ]
        for row in payload["http"]
    ]
    cpu_headers = ["shards", "uploaders", "HTTP process", "shard workers", "fork server"]
    cpu_headers += ["uploaders", "total", "cores busy"]
    print(format_table(cpu_headers, cpu_rows))
    if payload["shard_speedup"]:
        print("\nThroughput of more shards over fewer, same uploaders, and the CPU's ceiling:\n")
        speedups = [
            [
                s["uploaders"],
                f"{s['shards']} over {s['over_shards']}",
                s["ratio"],
                s["base_cpu_bound_updates_per_s"],
                s["cpu_bound_updates_per_s"],
                s["ratio_ceiling"],
                s["ratio_ceiling_vs_measured"],
            ]
            for s in payload["shard_speedup"]
        ]
        speed_headers = ["uploaders", "shards", "throughput ratio", "CPU bound, fewer (upd/s)"]
        speed_headers += ["CPU bound, more (upd/s)", "ceiling", "ceiling over measured"]
        print(format_table(speed_headers, speedups))
    out = write_json("server_ingest", payload, args.out_dir)
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
