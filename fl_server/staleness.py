"""Staleness policies: how much an update computed on an old model still counts (FedAsync)."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ConstantStaleness",
    "HingeStaleness",
    "PolynomialStaleness",
    "StalenessKind",
    "StalenessPolicy",
    "make_staleness_policy",
]

StalenessKind = Literal["constant", "polynomial", "hinge"]


@dataclass(frozen=True)
class StalenessPolicy(abc.ABC):
    """The weight ``mixing * s(tau)`` of an update that is ``tau`` versions stale.

    Xie et al. (FedAsync) mix ``x := (1 - a_t) x + a_t x_new`` with ``a_t = mixing * s(tau)``;
    on a delta that is ``x += a_t * (x_new - x_base)``, so the server weights the encrypted
    update by ``a_t`` and never multiplies the model.

    Parameters
    ----------
    mixing
        FedAsync's ``alpha`` in (0, 1]: the weight of a fresh update.
    max_staleness
        Updates more stale than this are refused (``weight`` returns ``None``).
    """

    mixing: float = 1.0
    max_staleness: int = 64

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mixing) and 0 < self.mixing <= 1):
            raise ValueError(f"mixing must be in (0, 1], got {self.mixing!r}")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness!r}")

    @abc.abstractmethod
    def s(self, staleness: int) -> float:
        """The staleness function itself, ``s(0) = 1``, non-increasing."""

    def weight(self, staleness: int) -> float | None:
        """``mixing * s(staleness)``, or ``None`` when the update is too stale to apply."""
        if staleness < 0:
            raise ValueError(f"staleness must be >= 0, got {staleness}")
        if staleness > self.max_staleness:
            return None
        return self.mixing * self.s(staleness)

    def describe(self) -> dict[str, float | int | str]:
        """The policy's parameters as plain data (for the status page)."""
        return {"kind": self.kind, "mixing": self.mixing, "max_staleness": self.max_staleness}

    @property
    @abc.abstractmethod
    def kind(self) -> StalenessKind: ...


@dataclass(frozen=True)
class ConstantStaleness(StalenessPolicy):
    """``s(tau) = 1``: every update up to ``max_staleness`` counts fully."""

    @property
    def kind(self) -> StalenessKind:
        return "constant"

    def s(self, staleness: int) -> float:
        return 1.0


@dataclass(frozen=True)
class PolynomialStaleness(StalenessPolicy):
    """``s(tau) = (1 + tau) ** -a``."""

    a: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.a) and self.a > 0):
            raise ValueError(f"polynomial staleness needs a > 0, got {self.a!r}")

    @property
    def kind(self) -> StalenessKind:
        return "polynomial"

    def s(self, staleness: int) -> float:
        return float((1.0 + staleness) ** -self.a)

    def describe(self) -> dict[str, float | int | str]:
        return {**super().describe(), "a": self.a}


@dataclass(frozen=True)
class HingeStaleness(StalenessPolicy):
    """``s(tau) = 1`` if ``tau <= b`` else ``1 / (a * (tau - b) + 1)``."""

    a: float = 10.0
    b: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.a) and self.a > 0):
            raise ValueError(f"hinge staleness needs a > 0, got {self.a!r}")
        if self.b < 0:
            raise ValueError(f"hinge staleness needs b >= 0, got {self.b!r}")

    @property
    def kind(self) -> StalenessKind:
        return "hinge"

    def s(self, staleness: int) -> float:
        if staleness <= self.b:
            return 1.0
        return 1.0 / (self.a * (staleness - self.b) + 1.0)

    def describe(self) -> dict[str, float | int | str]:
        return {**super().describe(), "a": self.a, "b": self.b}


def make_staleness_policy(
    kind: StalenessKind, *, a: float, b: int, mixing: float, max_staleness: int
) -> StalenessPolicy:
    """The policy named ``kind``; ``a`` and ``b`` are ignored where the function has none."""
    if kind == "constant":
        return ConstantStaleness(mixing=mixing, max_staleness=max_staleness)
    if kind == "polynomial":
        return PolynomialStaleness(mixing=mixing, max_staleness=max_staleness, a=a)
    if kind == "hinge":
        return HingeStaleness(mixing=mixing, max_staleness=max_staleness, a=a, b=b)
    raise ValueError(f"unknown staleness policy {kind!r}")
