"""uvicorn's h11 protocol with deadlines for receiving a request (slowloris protection).

uvicorn times out idle keep-alive connections only: a client that connects and sends
nothing, or sends a request's headers or body a byte at a time, holds its connection
(a file descriptor, a slot in uvicorn's connection set) for as long as it likes. Two
thousand such connections held for 70 s were all still open, measured against keyauth;
enough of them exhaust the process's descriptors and nobody else gets in.

``DeadlineH11Protocol`` closes a connection whose request headers are not complete
``HEFL_HTTP_HEADER_TIMEOUT`` seconds (default 10) after the connection opened or the
previous response ended, or whose body is not complete ``HEFL_HTTP_BODY_TIMEOUT``
seconds (default 300) after its headers. ``hefl-server`` uses it; the documented uvicorn
commands name it with ``--http hefl_http.protocol:DeadlineH11Protocol``, and a service
started without it says so in its log (``hefl_http.serving.lazy_app``).

A TLS handshake is bounded by asyncio itself (``ssl_handshake_timeout``, 60 s): this
protocol sees the connection only once the handshake is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from hefl_http.serving import configure_logging

__all__ = ["PROTOCOL_PATH", "DeadlineH11Protocol", "Deadlines", "deadlines_from_env"]

PROTOCOL_PATH = "hefl_http.protocol:DeadlineH11Protocol"  # for uvicorn's --http

logger = logging.getLogger("hefl_http")


class Deadlines:
    """Seconds allowed for a request's headers and, after them, for its body."""

    def __init__(self, header: float = 10.0, body: float = 300.0) -> None:
        if not header > 0 or not body > 0:
            raise ValueError(f"deadlines must be positive, got header={header} body={body}")
        self.header = header
        self.body = body


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def deadlines_from_env() -> Deadlines:
    """``HEFL_HTTP_HEADER_TIMEOUT`` and ``HEFL_HTTP_BODY_TIMEOUT``, in seconds."""
    return Deadlines(
        header=_seconds("HEFL_HTTP_HEADER_TIMEOUT", 10.0),
        body=_seconds("HEFL_HTTP_BODY_TIMEOUT", 300.0),
    )


class DeadlineH11Protocol(H11Protocol):
    """``H11Protocol`` that closes connections too slow to deliver a request."""

    deadlines: Deadlines | None = None  # read from the environment at first use

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.deadlines is None:
            cls.deadlines = deadlines_from_env()
            configure_logging("hefl_http", "INFO")
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "headers" or "body"

    # -- the deadline -------------------------------------------------------------------

    def _arm(self, part: str, seconds: float) -> None:
        if self._waiting_for == part:
            return
        self._disarm()
        self._waiting_for = part
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._waiting_for = None

    def _track(self) -> None:
        """Arm or disarm for what the client owes us now."""
        deadlines = self.deadlines
        assert deadlines is not None
        state = self.conn.their_state
        if state is h11.IDLE:
            self._arm("headers", deadlines.header)
        elif state is h11.SEND_BODY:
            self._arm("body", deadlines.body)
        else:  # the request is in (DONE), or the connection is ending
            self._disarm()

    def _expire(self) -> None:
        part = self._waiting_for
        self._deadline = None
        self._waiting_for = None
        if self.transport.is_closing():
            return
        deadlines = self.deadlines
        assert deadlines is not None
        seconds = deadlines.header if part == "headers" else deadlines.body
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.warning(
            "closed the connection from %s: request %s not received within %g s",
            client,
            part,
            seconds,
        )
        self.transport.close()

    # -- uvicorn's hooks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._track()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's keep-alive timer now covers an idle connection; a body the app answered
        # before reading it whole still owes its deadline.
        if self.conn.their_state is h11.SEND_BODY:
            self._track()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
