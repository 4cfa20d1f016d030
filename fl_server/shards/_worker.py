"""A shard worker process: one ``ShardCore``, driven over a pipe by ``ProcessBackend``."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

import crypto
from fl_server.shards._base import NoiseDraws
from fl_server.shards._core import Frames, ShardCore
from fl_server.shards._frames import receive_header, receive_message, send_message

__all__ = ["serve"]


def _steps(raw: list[list[Any]]) -> list[tuple[int, float]]:
    return [(int(t), float(w)) for t, w in raw]


def _run(
    core: ShardCore, op: str, h: dict[str, Any], frames: Frames
) -> tuple[int, Iterable[bytes]]:
    """One operation of the seam (``ShardBackend``) on this shard: how many reply frames,
    and the frames (serialized blocks go out one by one while the next is serialized).

    ``frames`` are read from the pipe as the operation takes them: a staged update's
    blocks are loaded one at a time as they arrive, never received whole first."""
    match op:
        case "open":
            core.open(int(h["lo"]), int(h["hi"]))
        case "stage":
            blocks = zip(h["indices"], frames, strict=True)
            core.stage(int(h["token"]), blocks, model=h["model"], hold=h.get("hold", True))
        case "discard":
            core.discard(int(h["token"]))
        case "buffer":
            core.buffer(int(h["token"]), float(h["weight"]), frames)
        case "add":
            core.add(int(h["token"]), float(h["weight"]), frames)
        case "flush":
            core.flush()
        case "subtract":
            core.subtract(int(h["token"]), float(h["weight"]), frames)
        case "install":
            core.install(int(h["token"]), frames)
        case "noise":
            core.noise(NoiseDraws.from_json(h["noise"]))
        case "serialize":
            indices = [int(i) for i in h["indices"]]
            return len(indices), core.serialized(indices)
        case "probe":
            noise = None if h.get("noise") is None else NoiseDraws.from_json(h["noise"])
            rebuilt = core.probe(_steps(h["subtract"]), _steps(h["add"]), noise, frames)
            return len(rebuilt), rebuilt
        case _:
            raise ValueError(f"unknown operation {op!r}")
    return 0, ()


def serve(conn: Connection) -> None:
    """Answer the server's messages until it says ``close`` or goes away.

    The first message carries the profile and the keyless context (never a secret one:
    ``ServerCipher`` refuses it). Every message is answered, in order: ``ok`` and the
    result's frames, or the error's class and message.
    """
    # The server stops its workers itself; a Ctrl-C to the process group is its to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        header, context = receive_message(conn)
        core = ShardCore(crypto.ServerCipher(context[0], crypto.get_profile(header["profile"])))
        send_message(conn, {"ok": True})
        while True:
            header, frames = receive_header(conn)
            op = header.pop("op")
            if op == "close":
                return
            try:
                try:
                    count, result = _run(core, op, header, frames)
                finally:
                    frames.drain()  # the next message starts after this one's last frame
            except crypto.CryptoError as exc:
                send_message(conn, {"ok": False, "error": type(exc).__name__, "message": str(exc)})
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                send_message(conn, {"ok": False, "error": "ShardError", "message": message})
            else:
                send_message(conn, {"ok": True}, result, count)
    except (EOFError, OSError):
        return  # the server is gone
    finally:
        conn.close()
