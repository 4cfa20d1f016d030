"""The synchronous round policy: a barrier over ``round_clients`` hospitals, FedAvg weights.

A round is the buffer of one model version. Its updates are logged as they come
(``UpdateRecord.deferred``) and kept unweighted; when the round's last update is in (or
the buffer is flushed: the job is done, a repair) every update gets ``n_i / sum n_j`` over
the round's contributors, from the rows each declared (``round_weights``), and the round
is added to the model. The weights follow from the log alone, so recovery computes the
same ones. ``RoundGate.admit`` is the one admission check the slot path (and any other
path that hands out work) calls.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import crypto
from fl_server.errors import RoundFullError, RoundWaitingError

__all__ = ["RoundGate", "RoundView", "round_weights"]


def round_weights(samples: Sequence[int | None], profile: crypto.CkksProfile) -> list[float]:
    """FedAvg's ``n_i / sum n_j`` for a round's updates, quantized as they are applied.

    An update whose client declared no rows counts as the mean of those that did (1 if
    none did: then every update weighs alike).
    """
    declared = [n for n in samples if n is not None]
    mean = sum(declared) / len(declared) if declared else 1.0
    rows = [float(n) if n is not None else mean for n in samples]
    total = math.fsum(rows)
    return [profile.applied_weight(n / total) for n in rows]


@dataclass(frozen=True)
class RoundView:
    """The open round as the status shows it."""

    round: int
    clients: int
    contributors: tuple[str, ...]
    training: tuple[str, ...]
    opened_at: float | None


class RoundGate:
    """Who may train in the open round: at most ``clients`` hospitals, each once.

    Parameters
    ----------
    clients
        ``round_clients``: the round closes when this many updates are in.
    contributors
        The clients whose update is in the open round, and the round (the model
        version it builds on); from the model state, so it survives restarts.
    training
        The clients holding a training slot now (``SlotTable.holders``).
    published
        Whether the model served is the newest version: until then a closed round's
        hospitals would pull the round before it, so they wait.
    retry_after
        Seconds a waiting client is told to wait before it asks again.
    """

    def __init__(
        self,
        clients: int,
        contributors: Callable[[], tuple[int, tuple[str, ...]]],
        training: Callable[[], tuple[str, ...]],
        published: Callable[[], bool],
        *,
        retry_after: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if clients < 1:
            raise ValueError("a round needs at least one client")
        self.clients = clients
        self._contributors = contributors
        self._training = training
        self._published = published
        self._retry_after = retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._opened: tuple[int, float] | None = None

    def admit(self, client_id: str) -> None:
        """Whether ``client_id`` may train now for the open round.

        Raises
        ------
        RoundWaitingError
            Its update is already in the open round: wait for the next version.
        RoundFullError
            The round has its ``clients`` hospitals without this one.
        """
        round_, contributors = self._contributors()
        if not self._published():
            raise RoundWaitingError(
                f"round {round_} is closed; its model is being published",
                retry_after=self._retry_after,
            )
        if client_id in contributors:
            raise RoundWaitingError(
                f"this hospital's update is in round {round_}, which waits for "
                f"{self.clients - len(contributors)} more; pull the next version then",
                retry_after=self._retry_after,
            )
        training = set(self._training()) - {client_id}
        if len(set(contributors) | training) >= self.clients:
            raise RoundFullError(
                f"round {round_} has its {self.clients} hospitals",
                retry_after=self._retry_after,
            )

    def view(self) -> RoundView:
        round_, contributors = self._contributors()
        with self._lock:
            if self._opened is None or self._opened[0] != round_:
                self._opened = (round_, self._clock())
            opened = self._opened[1]
        return RoundView(
            round_, self.clients, contributors, tuple(sorted(self._training())), opened
        )
