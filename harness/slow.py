"""Slow clients (slowloris): connections that never finish their request."""

from __future__ import annotations

import math
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from harness.services import keyauth_service, new_admin_key, rss_bytes, server_service

__all__ = ["SlowResult", "slow_clients"]


@dataclass
class SlowResult:
    """How many slow connections a service still held open, and how healthz fared meanwhile."""

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
        path = b"/v1/enroll" if service == "keyauth" else b"/v1/jobs/slow/updates"
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
