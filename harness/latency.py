"""A delaying TCP proxy on loopback: a WAN's round trip in front of a service, requests counted."""

# Each byte crosses the proxy ``one_way`` seconds after it arrived, in each direction, as
# netem's delay would (a round trip costs 2 * one_way, bandwidth is not limited); a new
# connection's first bytes wait one round trip more, its TCP handshake (TLS would add one
# or two: the services run plain http on loopback here). The
# client-to-server stream is read with h11, so every HTTP request is counted by method and
# path as it passes: tests count the requests of one update, benchmarks time them.

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

__all__ = ["DelayProxy", "delay_proxy"]

_CHUNK = 64 * 1024


@dataclass
class DelayProxy:
    """``url`` forwards to ``target`` (``http://host:port``), ``one_way`` seconds each way
    (it may be changed while the proxy runs: it holds for the bytes read from then on).

    ``requests`` lists each HTTP request that went through, as ``(method, path)`` (the
    path without its query), in order; read it with ``count()`` or ``since(mark)``.
    ``up`` and ``down`` count the bytes each way (TCP payload: headers included).
    """

    target: str
    one_way: float = 0.0
    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)
    up: int = 0
    down: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def mark(self) -> int:
        """Where the requests stand now (for ``since``)."""
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, str]]:
        """The requests that went through after ``mark``."""
        with self._lock:
            return list(self.requests[mark:])

    def count(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self.requests)

    def _moved(self, n: int, *, up: bool) -> None:
        with self._lock:
            if up:
                self.up += n
            else:
                self.down += n

    def _saw(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))


@contextlib.contextmanager
def delay_proxy(target: str, one_way: float = 0.0) -> Iterator[DelayProxy]:
    """A ``DelayProxy`` in front of ``target`` on a free loopback port, for the block's
    duration (its own thread and event loop)."""
    parts = urlsplit(target)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"a plain http://host:port target, not {target!r}")
    proxy = DelayProxy(target, one_way)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Future[None] | None = None

    async def serve() -> None:
        nonlocal stop
        stop = loop.create_future()

        relays: set[asyncio.Task[None]] = set()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            relays.add(task)
            try:
                await _relay(proxy, reader, writer, parts.hostname or "", parts.port or 0)
            except asyncio.CancelledError:
                pass  # the proxy stops: a cancelled callback task would be logged as failed
            finally:
                relays.discard(task)

        server = await asyncio.start_server(connected, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy.url = f"http://127.0.0.1:{port}"
        ready.set()
        async with server:
            await stop
            for task in list(relays):
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the delay proxy did not start")
    try:
        yield proxy
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()


async def _relay(
    proxy: DelayProxy,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    counter = _RequestCounter(proxy)
    # a new connection costs a round trip (the TCP handshake) before a byte can leave
    opened = asyncio.get_running_loop().time() + 2 * proxy.one_way
    await asyncio.gather(
        _pump(reader, up_writer, proxy, counter.feed, not_before=opened),
        _pump(up_reader, writer, proxy, lambda data: proxy._moved(len(data), up=False)),
        return_exceptions=True,
    )


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    proxy: DelayProxy,
    observe: Callable[[bytes], None] | None,
    *,
    not_before: float = 0.0,
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``proxy.one_way`` seconds (as it is when
    the chunk is read) after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.close()
                return
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(_CHUNK)
            if observe is not None and data:
                observe(data)
            await queue.put((max(loop.time(), not_before) + proxy.one_way, data))
            if not data:
                break
        await delivering
    except (OSError, asyncio.CancelledError):
        delivering.cancel()
        await asyncio.gather(delivering, return_exceptions=True)
        with contextlib.suppress(OSError):
            writer.close()


class _RequestCounter:
    """Reads a client's side of one connection with h11 and tells the proxy each request."""

    def __init__(self, proxy: DelayProxy) -> None:
        self._proxy = proxy
        self._h11 = h11.Connection(h11.SERVER)
        self._broken = False

    def feed(self, data: bytes) -> None:
        self._proxy._moved(len(data), up=True)
        if self._broken:
            return
        self._h11.receive_data(data)
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    return
                if event is h11.PAUSED:
                    self._next_cycle()
                elif isinstance(event, h11.Request):
                    path = event.target.decode("ascii", "replace").split("?", 1)[0]
                    self._proxy._saw(event.method.decode("ascii", "replace"), path)
                elif isinstance(event, h11.EndOfMessage):
                    self._next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.ProtocolError:
            self._broken = True  # not HTTP/1.1 as h11 reads it: forwarded, not counted

    def _next_cycle(self) -> None:
        # h11 moves to the next request once "our" response is sent: a stand-in, never sent
        if self._h11.our_state is h11.SEND_RESPONSE:
            self._h11.send(h11.Response(status_code=204, headers=[]))
        if self._h11.our_state is h11.SEND_BODY:
            self._h11.send(h11.EndOfMessage())
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
