"""How much an update counts beyond its staleness: its data share, its frequency, the step.

An update's applied weight (``UpdateWeigher.weight``) is

    min(1, mixing * s(tau) * data(i) * step(t))

``s`` is the staleness function (``fl_server.staleness``). ``data(i)`` is the hospital's
data share ``p_i = n_i / sum_j n_j`` over the hospitals seen so far (``n`` as declared in
``X-Hefl-Samples``) times a frequency correction ``g_i = clip((1/K) / u_i, 1/c, c)``,
``u_i`` its share of the updates (this one counted) and ``K`` the hospitals seen: over any
stretch of updates a hospital's summed weight tends to its data share, however often it
sends, and a fast small site cannot pull the model toward itself. With every hospital at
the same pace that is FedAvg's ``n_i / sum n_j`` per update. ``step(t)`` is the server's
step-size schedule over ``t`` applied updates. Every factor is a plaintext scalar: the
server weights the update, never multiplies the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fl_server.staleness import StalenessPolicy

__all__ = [
    "ClientShare",
    "DataWeighting",
    "ScheduleKind",
    "StepSchedule",
    "UpdateWeigher",
    "WeightingKind",
    "data_shares",
]

WeightingKind = Literal["uniform", "data"]
ScheduleKind = Literal["constant", "inverse-sqrt"]


@dataclass(frozen=True)
class ClientShare:
    """What the server knows of one hospital: its declared rows and its applied updates."""

    samples: int
    updates: int


def data_shares(shares: Mapping[str, ClientShare]) -> dict[str, float]:
    """Each hospital's ``n_i / sum n_j`` (FedAvg's weight); equal shares if no rows known."""
    total = sum(s.samples for s in shares.values())
    if total <= 0:
        return {k: 1.0 / len(shares) for k in shares}
    return {k: s.samples / total for k, s in shares.items()}


def _mean_rows(known: Mapping[str, ClientShare]) -> int:
    return round(sum(s.samples for s in known.values()) / len(known)) if known else 1


@dataclass(frozen=True)
class DataWeighting:
    """``uniform``: every update counts 1 (before staleness and the step); ``data``: its
    hospital's data share times the clipped frequency correction.

    Parameters
    ----------
    kind
        ``uniform`` or ``data``.
    clip
        ``c`` >= 1: the frequency correction stays in ``[1/c, c]``, so a hospital that
        has sent few updates is not given an unbounded weight.
    """

    kind: WeightingKind = "data"
    clip: float = 4.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip >= 1):
            raise ValueError(f"clip must be >= 1, got {self.clip!r}")

    def factor(
        self, client_id: str, samples: int | None, known: Mapping[str, ClientShare]
    ) -> float:
        """The data factor of ``client_id``'s next update, declared ``samples`` rows.

        ``known`` holds every hospital seen before this update (its rows and updates).
        An update that declares no rows counts the rows its hospital declared last, or
        else the mean of the others' (1 if none): an average hospital.
        """
        if self.kind == "uniform":
            return 1.0
        prior = known.get(client_id)
        if samples is None:
            samples = prior.samples if prior else _mean_rows(known)
        shares = dict(known)
        shares[client_id] = ClientShare(samples, prior.updates if prior else 0)
        k = len(shares)
        p = data_shares(shares)[client_id]
        # this update counted, and one more per hospital (Laplace): the first updates of
        # a job do not swing the correction to its bounds
        total = sum(s.updates for s in shares.values()) + 1 + k
        u = (shares[client_id].updates + 2) / total
        g = min(self.clip, max(1.0 / self.clip, (1.0 / k) / u))
        return p * g

    def describe(self) -> dict[str, float | str]:
        return {"kind": self.kind, "clip": self.clip}


@dataclass(frozen=True)
class StepSchedule:
    """The server's step size after ``t`` applied updates.

    ``constant``: 1. ``inverse-sqrt``: ``1 / sqrt(1 + t / half)``, so the step halves
    after ``3 * half`` updates and the model settles instead of drifting after its peak.
    """

    kind: ScheduleKind = "constant"
    half: int = 50

    def __post_init__(self) -> None:
        if self.half < 1:
            raise ValueError(f"half must be >= 1, got {self.half!r}")

    def step(self, t: int) -> float:
        if self.kind == "constant":
            return 1.0
        return 1.0 / math.sqrt(1.0 + max(t, 0) / self.half)

    def describe(self) -> dict[str, float | int | str]:
        return {"kind": self.kind, "half": self.half}


@dataclass(frozen=True)
class UpdateWeigher:
    """The whole weight of an asynchronous update: staleness, data share, server step."""

    staleness: StalenessPolicy
    data: DataWeighting = DataWeighting()
    schedule: StepSchedule = StepSchedule()

    def weight(
        self,
        *,
        staleness: int,
        client_id: str,
        samples: int | None,
        known: Mapping[str, ClientShare],
        applied: int,
    ) -> float | None:
        """``min(1, mixing * s(tau) * data * step(applied))``; ``None`` beyond
        ``max_staleness``. Not yet quantized (``CkksProfile.applied_weight``)."""
        raw = self.uncapped(
            staleness=staleness, client_id=client_id, samples=samples, known=known, applied=applied
        )
        return None if raw is None else min(1.0, raw)

    def uncapped(
        self,
        *,
        staleness: int,
        client_id: str,
        samples: int | None,
        known: Mapping[str, ClientShare],
        applied: int,
    ) -> float | None:
        """``mixing * s(tau) * data * step(applied)`` before ``weight``'s cap at 1."""
        fresh = self.staleness.weight(staleness)
        if fresh is None:
            return None
        return fresh * self.data.factor(client_id, samples, known) * self.schedule.step(applied)
