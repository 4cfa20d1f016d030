"""A loopback TCP relay that counts the bytes a client and its server exchange.

Both systems' clients reach their server through one relay each, so "bytes up / down per
client update" is what went over the wire: HTTP requests and responses with their
headers, polling and heartbeats included (TCP payload; no IP or TCP headers).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

_CHUNK = 65536


class ByteRelay:
    """Accepts on ``127.0.0.1:<port>`` and forwards each connection to ``target``.

    ``up`` counts client-to-server bytes, ``down`` server-to-client bytes.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.up = 0
        self.down = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            threading.Thread(target=self._connection, args=(client, server), daemon=True).start()

    def _connection(self, client: socket.socket, server: socket.socket) -> None:
        upstream = threading.Thread(target=self._pump, args=(client, server, True), daemon=True)
        upstream.start()
        self._pump(server, client, False)
        upstream.join()
        client.close()
        server.close()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while chunk := src.recv(_CHUNK):
                # counted before it is forwarded: once the other side has it, it is counted
                with self._lock:
                    if up:
                        self.up += len(chunk)
                    else:
                        self.down += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            # half-close so the other direction can finish, then let both sockets go
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RD)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.up, self.down

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> ByteRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
