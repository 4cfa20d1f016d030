"""``ProcessBackend``: the model's blocks split by range across worker processes."""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import multiprocessing
import socket
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

import crypto
from fl_server.shards._base import (
    STREAM_ABOVE,
    BlockBytes,
    BlockSource,
    NoiseDraws,
    ShardDiedError,
    ShardError,
    Staged,
    as_source,
)
from fl_server.shards._frames import receive_message, send_message
from fl_server.shards._worker import serve

__all__ = ["ProcessBackend"]

logger = logging.getLogger("fl_server")

# Seconds a worker gets to finish its queue and exit on ``close`` before it is killed.
_CLOSE_TIMEOUT = 10.0


def _context() -> BaseContext:
    # Never fork a process that has threads: a fork server, started clean, forks workers
    # with TenSEAL already imported.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fl_server.shards._worker"])
    return ctx


# Socket buffer asked for each end of a worker's pipe: an update's blocks (8 MB per 1e6
# parameters) then cross in a few hand-overs between the processes, not in 64 KB steps.
_PIPE_BUFFER = 4 * 1024 * 1024


def _pipe() -> tuple[Connection, Connection]:
    """A duplex pipe (as ``multiprocessing.Pipe``) with large socket buffers; the kernel
    caps them at ``net.core.wmem_max``/``rmem_max``."""
    ends = socket.socketpair()
    for end in ends:
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _PIPE_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _PIPE_BUFFER)
    return Connection(ends[0].detach()), Connection(ends[1].detach())


class _Shard:
    """One worker process and its pipe; replies are read in the order asked."""

    def __init__(self, ctx: BaseContext, public_context: bytes, profile: crypto.CkksProfile):
        self.conn, child = _pipe()
        self.process: BaseProcess = ctx.Process(  # type: ignore[attr-defined]
            target=serve, args=(child,), name="hefl-shard", daemon=True
        )
        self.process.start()
        child.close()  # the worker's end: its death must reach us as end of file
        self.pending = 0
        self.failure: ShardError | None = None
        self.post({"op": "init", "profile": profile.name}, [public_context])

    def post(self, header: dict[str, Any], frames: Sequence[bytes] = (), count: int = -1) -> None:
        """Send a message; its reply is read by a later ``reply``. With ``count``, the
        message's ``count`` frames follow by ``send_frame``."""
        if self.failure is not None:
            raise self.failure
        try:
            send_message(self.conn, header, frames, count)
        except OSError as exc:
            raise self._died() from exc
        self.pending += 1

    def send_frame(self, frame: bytes) -> None:
        """One frame of the message posted last."""
        try:
            self.conn.send_bytes(frame)
        except OSError as exc:
            raise self._died() from exc

    def reply(self) -> tuple[dict[str, Any], list[bytes]]:
        """The reply to the newest message (after every earlier one, raising the first error
        of a posted message)."""
        while True:
            try:
                header, frames = receive_message(self.conn)
            except (EOFError, OSError) as exc:
                raise self._died() from exc
            self.pending -= 1
            if self.pending == 0:
                return header, frames
            if not header["ok"] and self.failure is None:
                self.failure = ShardError(f"a shard failed: {header['message']}")
            if self.failure is not None:
                raise self.failure

    def _died(self) -> ShardDiedError:
        self.process.join(0.5)
        code = self.process.exitcode
        how = "is still running" if code is None else f"exited with code {code}"
        self.failure = ShardDiedError(f"shard worker {self.process.pid} is gone ({how})")
        return self.failure

    def close(self) -> None:
        with contextlib.suppress(OSError):
            send_message(self.conn, {"op": "close"})
        self.process.join(_CLOSE_TIMEOUT)
        if self.process.is_alive():
            logger.warning("shard worker %s did not stop; killing it", self.process.pid)
            self.process.kill()
            self.process.join()
        self.conn.close()


class ProcessBackend:
    """``ShardBackend`` over ``shards`` worker processes, each owning one block range.

    Each worker gets the keyless context and its range; only JSON headers and ciphertext
    bytes cross the pipes. A worker that dies makes every later call raise
    ``ShardDiedError`` (the caller fails the job; a restart rebuilds the model from the
    checkpoint and the log).

    Parameters
    ----------
    public_context
        The job's keyless context.
    profile
        Its profile.
    shards
        How many worker processes.
    stream_above
        Update blocks of more bytes than this are staged streamed (``Staged.source``).

    Blocks cross the pipes one at a time, to every shard in turn, so that the shards
    load them at once and neither side holds an update's bytes whole.
    """

    def __init__(
        self,
        public_context: bytes,
        profile: crypto.CkksProfile,
        shards: int,
        *,
        stream_above: int = STREAM_ABOVE,
    ) -> None:
        if shards < 1:
            raise ValueError("a process backend needs at least one shard")
        self._profile = profile
        self._stream_above = stream_above
        ctx = _context()
        self._shards: list[_Shard] = []
        try:
            for _ in range(shards):
                self._shards.append(_Shard(ctx, public_context, profile))
            for shard in self._shards:
                self._check(shard.reply())
        except BaseException:
            self.close()
            raise
        self._tokens = itertools.count(1)
        self._bounds = [0] * (shards + 1)

    @property
    def profile(self) -> crypto.CkksProfile:
        return self._profile

    @property
    def failure(self) -> ShardError | None:
        return next((s.failure for s in self._shards if s.failure is not None), None)

    @property
    def pids(self) -> list[int | None]:
        """The worker processes' ids (tests kill one)."""
        return [s.process.pid for s in self._shards]

    @property
    def n_blocks(self) -> int:
        return self._bounds[-1]

    def open(self, n_blocks: int) -> None:
        k = len(self._shards)
        self._bounds = [n_blocks * i // k for i in range(k + 1)]
        self._all(
            [{"op": "open", "lo": lo, "hi": hi} for lo, hi in itertools.pairwise(self._bounds)]
        )

    def stage(self, blocks: BlockBytes | BlockSource, *, model: bool = False) -> Staged:
        source = as_source(blocks)
        try:
            token = next(self._tokens)
            hold = Staged.holds(source, model=model, stream_above=self._stream_above)
            parts = self._split(source)
            header = {"op": "stage", "token": token, "model": model, "hold": hold}
            for shard, part in zip(self._shards, parts, strict=True):
                indices = [source.indices[p] for p in part]
                shard.post({**header, "indices": indices}, count=len(part))
            self._send(source, parts)
            # Phase one done on every shard: a block refused anywhere leaves every shard as
            # it was.
            replies = [shard.reply()[0] for shard in self._shards]
        except BaseException:
            source.close()
            raise
        refused = [r for r in replies if not r["ok"]]
        if refused:
            source.close()
            for shard, reply in zip(self._shards, replies, strict=True):
                if reply["ok"]:
                    shard.post({"op": "discard", "token": token})
            raise _error(refused[0])
        return Staged.of(token, source, hold=hold)

    def discard(self, staged: Staged) -> None:
        staged.close()
        self._post_all({"op": "discard", "token": staged.token})

    def buffer(self, staged: Staged, weight: float) -> None:
        self._consume({"op": "buffer", "token": staged.token, "weight": weight}, [staged])

    def add(self, staged: Staged, weight: float) -> None:
        self._consume({"op": "add", "token": staged.token, "weight": weight}, [staged])

    def flush(self) -> None:
        self._post_all({"op": "flush"})

    def subtract(self, staged: Staged, weight: float) -> None:
        self._consume({"op": "subtract", "token": staged.token, "weight": weight}, [staged])

    def install(self, staged: Staged) -> None:
        self._consume({"op": "install", "token": staged.token}, [staged])

    def noise(self, noise: NoiseDraws) -> None:
        self._post_all({"op": "noise", "noise": noise.to_json()})

    def serialize(self, indices: Sequence[int]) -> list[bytes]:
        parts: list[list[int]] = [[] for _ in self._shards]
        for index in indices:
            parts[self._owner(index)].append(index)
        replies = self._all([{"op": "serialize", "indices": part} for part in parts])
        found: dict[int, bytes] = {}
        for part, frames in zip(parts, replies, strict=True):
            found.update(zip(part, frames, strict=True))
        return [found[i] for i in indices]

    def probe(
        self,
        subtract: Sequence[tuple[Staged, float]],
        add: Sequence[tuple[Staged, float]],
        noise: NoiseDraws | None = None,
    ) -> list[bytes]:
        header = {
            "op": "probe",
            "subtract": [[s.token, w] for s, w in subtract],
            "add": [[s.token, w] for s, w in add],
            "noise": None if noise is None else noise.to_json(),
        }
        self._consume(header, [s for s, _ in (*subtract, *add)])
        replies = [self._check(shard.reply()) for shard in self._shards]
        return [frame for frames in replies for frame in frames]  # ranges are in order

    def close(self) -> None:
        for shard in self._shards:
            shard.close()
        self._shards = []

    def _owner(self, index: int) -> int:
        if not 0 <= index < self._bounds[-1]:
            raise ShardError(f"block {index} is outside the model (0..{self._bounds[-1] - 1})")
        return bisect.bisect_right(self._bounds, index) - 1

    def _split(self, source: BlockSource) -> list[list[int]]:
        """The positions of ``source``'s blocks, split by owning shard."""
        parts: list[list[int]] = [[] for _ in self._shards]
        for position, index in enumerate(source.indices):
            parts[self._owner(index)].append(position)
        return parts

    def _send(self, source: BlockSource, parts: Sequence[Sequence[int]]) -> None:
        """Each shard's blocks of ``source`` (``parts``: positions), a block to every shard
        in turn, read one at a time: the shards load at once while the next is read."""
        for k in range(max((len(part) for part in parts), default=0)):
            for shard, part in zip(self._shards, parts, strict=True):
                if k < len(part):
                    shard.send_frame(source.read(part[k]))

    def _consume(self, header: dict[str, Any], staged: Sequence[Staged]) -> None:
        """Post ``header`` to every shard, followed by the blocks of the streamed ones of
        ``staged`` (in their order), which are then closed; the replies are read later."""
        streamed = [s.source for s in staged if s.source is not None]
        try:
            splits = [self._split(source) for source in streamed]
            for k, shard in enumerate(self._shards):
                shard.post(header, count=sum(len(parts[k]) for parts in splits))
            for source, parts in zip(streamed, splits, strict=True):
                self._send(source, parts)
        finally:
            for source in streamed:
                source.close()

    def _post_all(self, header: dict[str, Any]) -> None:
        for shard in self._shards:
            shard.post(header)

    def _all(self, headers: Sequence[dict[str, Any]]) -> list[list[bytes]]:
        """Ask every shard at once (one header each); their reply frames, in shard order."""
        for shard, header in zip(self._shards, headers, strict=True):
            shard.post(header)
        return [self._check(shard.reply()) for shard in self._shards]

    @staticmethod
    def _check(reply: tuple[dict[str, Any], list[bytes]]) -> list[bytes]:
        header, frames = reply
        if not header["ok"]:
            raise _error(header)
        return frames


def _error(header: dict[str, Any]) -> Exception:
    """A worker's error again: a ``crypto`` error by its class, anything else a ``ShardError``."""
    cls = getattr(crypto, str(header["error"]), None)
    if isinstance(cls, type) and issubclass(cls, crypto.CryptoError):
        return cls(header["message"])
    return ShardError(f"a shard failed: {header['message']}")
