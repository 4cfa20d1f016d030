"""keyauth and fl_server as real uvicorn processes on loopback (demo, benchmarks, tests)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hefl_http.protocol import PROTOCOL_PATH

__all__ = [
    "ServiceError",
    "ServiceProcess",
    "Tls",
    "child_environ",
    "free_port",
    "keyauth_service",
    "new_admin_key",
    "rss_bytes",
    "server_service",
]

# Variables of the services' own settings are never inherited from the caller's shell:
# each process gets exactly the configuration written here.
_SETTING_PREFIXES = ("KEYAUTH_", "FLSERVER_", "FLCLIENT_")


class ServiceError(RuntimeError):
    """A service did not start, or died."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_admin_key() -> str:
    """A fresh random administrator key."""
    return "demo-" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Tls:
    """A server certificate and key, and the CA file its clients trust (``make-certs.sh``)."""

    certfile: Path
    keyfile: Path
    cafile: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))


def child_environ(tls: Tls | None) -> dict[str, str]:
    """Our environment without the services' settings, trusting ``tls.cafile`` if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    if tls is not None:
        env["SSL_CERT_FILE"] = str(tls.cafile)
    return env


@dataclass
class ServiceProcess:
    """``python -m uvicorn <app>`` on a loopback port, logging to ``log``.

    It runs with hefl's request deadlines (``--http hefl_http.protocol:...``) and, given
    ``tls``, serves https (the process also trusts ``tls.cafile``, through
    ``SSL_CERT_FILE``, for its own calls to the other service). ``uvicorn_args`` are
    further uvicorn options (``--log-level warning``, ...). As a context manager it is
    started on entry and stopped on exit.
    """

    app: str
    env: Mapping[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    uvicorn_args: Sequence[str] = ()
    tls: Tls | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> ServiceProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and return once ``/healthz`` answers 200."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "uvicorn", self.app, "--http", PROTOCOL_PATH]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {**child_environ(self.tls), **self.env}
        verify: ssl.SSLContext | bool = True
        if self.tls is not None:
            command += ["--ssl-certfile", str(self.tls.certfile)]
            command += ["--ssl-keyfile", str(self.tls.keyfile)]
            verify = self.tls.client_context()
        command += self.uvicorn_args
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own uvicorn command
                command, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"{self.app} exited with code {self.process.returncode}; "
                    f"last lines of {self.log}:\n{self.tail()}"
                )
            try:
                answer = httpx.get(f"{self.url}/healthz", timeout=1, verify=verify)
                if answer.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceError(f"{self.app} did not answer /healthz within {timeout:.0f} s")
            time.sleep(0.1)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the state on disk."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def keyauth_service(
    state_dir: Path,
    admin_key: str,
    log: Path,
    *,
    uvicorn_args: Sequence[str] = (),
    tls: Tls | None = None,
    **settings: str,
) -> ServiceProcess:
    """A key authority, run by ``with``; ``settings`` are extra ``KEYAUTH_*`` (lower-case names)."""
    env = {"KEYAUTH_STATE_DIR": str(state_dir), "KEYAUTH_ADMIN_KEY": admin_key}
    env.update({f"KEYAUTH_{k.upper()}": v for k, v in settings.items()})
    return ServiceProcess("keyauth.app:app", env, log, uvicorn_args=uvicorn_args, tls=tls)


def server_service(
    keyauth_url: str,
    state_dir: Path,
    log: Path,
    *,
    uvicorn_args: Sequence[str] = (),
    tls: Tls | None = None,
    **settings: str,
) -> ServiceProcess:
    """An aggregation server, run by ``with``; ``settings`` are extra ``FLSERVER_*`` values."""
    env = {"FLSERVER_KEYAUTH_URL": keyauth_url, "FLSERVER_STATE_DIR": str(state_dir)}
    env.update({f"FLSERVER_{k.upper()}": v for k, v in settings.items()})
    return ServiceProcess("fl_server.app:app", env, log, uvicorn_args=uvicorn_args, tls=tls)


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (0 if ``/proc`` does not say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
