"""Request deadlines under real uvicorn: slow clients are cut off, normal ones are not."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.services import ServiceProcess, keyauth_service, new_admin_key
from hefl_http.protocol import Deadlines, deadlines_from_env

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def keyauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("deadlines")
    saved = {k: os.environ.get(k) for k in ("HEFL_HTTP_HEADER_TIMEOUT", "HEFL_HTTP_BODY_TIMEOUT")}
    os.environ["HEFL_HTTP_HEADER_TIMEOUT"] = str(HEADER_TIMEOUT)
    os.environ["HEFL_HTTP_BODY_TIMEOUT"] = str(BODY_TIMEOUT)
    try:
        with keyauth_service(work / "state", new_admin_key(), work / "keyauth.log") as service:
            yield service
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def connect(service: ServiceProcess, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    if first:
        sock.sendall(first)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading EOF), or None if it stayed open."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    finally:
        sock.close()
    return time.monotonic() - start


def trickle(sock: socket.socket, data: bytes, pause: float = 0.05) -> OSError | None:
    """Send ``data`` a byte at a time; the error that stopped it (the server closed), if any."""
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(pause)
    except OSError as exc:
        return exc
    return None


def test_a_silent_connection_is_closed_after_the_header_deadline(
    keyauth: ServiceProcess,
) -> None:
    assert closed_within(connect(keyauth), HEADER_TIMEOUT + 3) is not None


def test_headers_that_never_end_are_cut_off(keyauth: ServiceProcess) -> None:
    sock = connect(keyauth, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert closed_within(sock, HEADER_TIMEOUT + 3) is not None


def test_headers_trickled_a_byte_at_a_time_are_cut_off(keyauth: ServiceProcess) -> None:
    sock = connect(keyauth)
    start = time.monotonic()
    refused = trickle(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200)
    sock.close()
    assert isinstance(refused, BrokenPipeError | ConnectionResetError)
    assert time.monotonic() - start < HEADER_TIMEOUT + 3


def test_a_body_that_never_ends_is_cut_off(keyauth: ServiceProcess) -> None:
    head = (
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    closed = closed_within(connect(keyauth, head), BODY_TIMEOUT + 3)
    assert closed is not None
    assert closed > BODY_TIMEOUT / 2  # the header deadline did not cut it short


def test_keep_alive_clients_and_slow_but_timely_requests_are_served(
    keyauth: ServiceProcess,
) -> None:
    # One keep-alive connection, pausing longer than the header deadline between requests
    # (uvicorn's own 5 s keep-alive timeout governs idle time between requests).
    with httpx.Client(base_url=keyauth.url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEADER_TIMEOUT * 1.5)
    # Headers and a body sent in pieces, each part inside its deadline.
    sock = connect(keyauth, b"GET /healthz HTTP/1.1\r\n")
    time.sleep(HEADER_TIMEOUT / 2)
    sock.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
    answer = sock.makefile("rb").read()
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200")


def test_cut_off_connections_are_logged_without_their_bytes(keyauth: ServiceProcess) -> None:
    secret = b"never-log-this-value"
    sock = connect(keyauth, b"GET /healthz HTTP/1.1\r\nX-Secret: " + secret)
    assert closed_within(sock, HEADER_TIMEOUT + 3) is not None
    time.sleep(0.2)
    log = keyauth.log.read_bytes()
    assert b"request headers not received within 1 s" in log
    assert secret not in log
    assert b"no request deadlines" not in log  # ServiceProcess starts uvicorn with them


def test_deadlines_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEFL_HTTP_HEADER_TIMEOUT", raising=False)
    monkeypatch.setenv("HEFL_HTTP_BODY_TIMEOUT", "42.5")
    deadlines = deadlines_from_env()
    assert (deadlines.header, deadlines.body) == (10.0, 42.5)
    monkeypatch.setenv("HEFL_HTTP_HEADER_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="HEFL_HTTP_HEADER_TIMEOUT must be a number"):
        deadlines_from_env()
    monkeypatch.setenv("HEFL_HTTP_HEADER_TIMEOUT", "0")
    with pytest.raises(ValueError, match="must be positive"):
        deadlines_from_env()
    with pytest.raises(ValueError, match="positive"):
        Deadlines(header=1.0, body=-1.0)


def test_uvicorn_without_deadlines_is_named_in_the_log(tmp_path: Path) -> None:
    service = keyauth_service(tmp_path / "state", new_admin_key(), tmp_path / "keyauth.log")
    service.uvicorn_args = ("--http", "h11")  # uvicorn's own protocol, as a bare command
    with service:
        pass
    assert b"no request deadlines" in service.log.read_bytes()
