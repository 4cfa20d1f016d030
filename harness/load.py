"""Load: many concurrent clients on one job; latency, 5xx and the server's memory over time."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from harness.admin import admin_token, create_job, read_status, viewer_token
from harness.parties import (
    Party,
    enroll,
    job_url,
    make_layout,
    random_blocks,
    restamp,
    start_job,
    update_envelope,
)
from harness.services import keyauth_service, new_admin_key, rss_bytes, server_service
from harness.studies import study_json

_JOB = "load"

__all__ = ["LoadResult", "load"]


@dataclass
class LoadResult:
    """Throughput, latency, statuses and the server's resident memory over one load run."""

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
                    if k % 5 == 0:  # a look at the job now and then, as clients do
                        answer = await http.get(job_url("", _JOB), headers=party.auth)
                        if answer.status_code == 200:
                            version[0] = max(version[0], int(answer.json()["version"]))
                    else:
                        _, body = restamp(pool[k % len(pool)], version[0])
                        answer = await http.post(
                            job_url("", _JOB, "/updates"), content=body, headers=party.auth
                        )
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
    """``clients`` parties post restamped updates of ``n_params`` for ``seconds``."""
    admin = new_admin_key()
    extra = {"profile": profile} if profile else {}  # else keyauth's default profile
    with keyauth_service(
        work / "keyauth", admin, work / "keyauth.log", uvicorn_args=(), tls=None, **extra
    ) as keyauth:
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
            # Room in the apply queue for every client: admission never has to say 503.
            max_queued_updates=str(max(16, clients + 14)),
        ) as server:
            # The default max_staleness (64): a post based too far back is a 409, and
            # receipts older than the window are forgotten (memory stays flat).
            spec = study_json(_JOB, profile=prof.name, target_updates=100_000_000)
            create_job(server.url, admin_token(keyauth.url, admin), spec)
            start_job(server.url, _JOB, parties[0], layout, random_blocks(layout, prof, 1))
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
            viewer = viewer_token(keyauth.url, admin)
            status = read_status(server.url, viewer, _JOB, timeout=30)
            applied = status["updates_applied"]
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
