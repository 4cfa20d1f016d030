"""Hospital-level differential privacy at the server: the noise of each update, and its ε.

A study whose ``[privacy]`` has ``level = "hospital"`` has its hospitals clip every
update to L2 norm ``clip``; the server adds Gaussian noise of ``noise_multiplier · clip ·
w`` to every parameter slot of the model as it applies an update of weight ``w``. The
noise is drawn from a seed the server keeps in that update's log record only, so a
replay and a probe's rebuild see the same noise. Each hospital's ε is that of the
Gaussian mechanism with sampling rate 1, composed over its applied updates (the RDP
analysis Opacus' ``RDPAccountant`` makes): derived from the applied-update counts the log and
the checkpoints keep, so it survives kill -9 without a ledger of its own.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crypto
import hefl_study
from fl_server.domain import ClientPrivacy
from fl_server.shards import NoiseDraws
from fl_server.store import UpdateRecord

__all__ = ["UpdateNoise", "hospital_epsilon", "hospital_privacy", "update_noise"]


@dataclass(frozen=True)
class UpdateNoise:
    """The noise an applied update brings: ``std_per_weight · w`` at every parameter slot.

    ``param_slots`` and ``total_params`` are the layout's: its canary and padding slots
    get none (the hospitals' integrity check still holds).
    """

    std_per_weight: float
    param_slots: int
    total_params: int

    @classmethod
    def for_layout(cls, std_per_weight: float, layout: crypto.ModelLayout) -> UpdateNoise:
        return cls(std_per_weight, layout.param_slots, layout.total_params)

    @staticmethod
    def draw_seed() -> int:
        """A fresh seed for one update's noise (OS randomness: no party can predict it)."""
        return secrets.randbits(128)

    def draws(self, records: Sequence[UpdateRecord]) -> NoiseDraws:
        """The noise of each of ``records`` at its applied weight, as the model's shards
        add it (``ShardBackend.noise``) or a probe takes it out; records logged before the
        job had noise have none."""
        return NoiseDraws(
            tuple(
                (r.noise_seed, self.std_per_weight * r.weight)
                for r in records
                if r.noise_seed is not None
            ),
            self.param_slots,
            self.total_params,
        )


def update_noise(
    privacy: hefl_study.PrivacySpec | None, layout: crypto.ModelLayout
) -> UpdateNoise | None:
    """The noise of a study's updates; ``None`` unless its ``[privacy]`` is hospital-level."""
    if privacy is None or privacy.level != "hospital":
        return None
    assert privacy.clip is not None  # hefl_study: the hospital level has both
    assert privacy.noise_multiplier is not None
    return UpdateNoise.for_layout(privacy.noise_multiplier * privacy.clip, layout)


# Opacus' RDPAccountant.DEFAULT_ALPHAS (the RDP orders it minimizes over); a test checks
# that they are still Opacus' own.
RDP_ORDERS: tuple[float, ...] = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *(float(x) for x in range(12, 64)),
)


@functools.lru_cache(maxsize=4096)
def hospital_epsilon(noise_multiplier: float, updates: int, delta: float) -> float:
    """ε at ``delta`` after ``updates`` Gaussian mechanisms of ``noise_multiplier`` (RDP,
    sampling rate 1: every applied update of a hospital is one release of its data).

    At sampling rate 1 the Gaussian mechanism's RDP of order a is a / (2z²), composed by
    adding over the updates; ε is Balle et al.'s (2020, Theorem 21) conversion minimized
    over Opacus' orders. These are the two formulas Opacus' ``RDPAccountant`` evaluates for
    the history ``[(noise_multiplier, 1.0, updates)]`` (a test holds them to it); they are
    written here because importing ``opacus`` pulls torch into the server (6 s and about
    300 MB) for two lines of arithmetic.
    """
    if updates <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    orders = np.array(RDP_ORDERS)
    rdp = updates * orders / (2 * noise_multiplier**2)
    epsilon = (
        rdp - (math.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)
    )
    return float(np.nanmin(epsilon))


def hospital_privacy(privacy: hefl_study.PrivacySpec, updates: int, version: int) -> ClientPrivacy:
    """A hospital's ε as the status shows it: ``updates`` noised updates applied, at the
    study's δ, as of model ``version``."""
    assert privacy.noise_multiplier is not None  # hefl_study: hospital level has one
    return ClientPrivacy(
        epsilon=hospital_epsilon(privacy.noise_multiplier, updates, privacy.delta),
        delta=privacy.delta,
        target_epsilon=None,
        version=version,
        level="hospital",
        updates=updates,
    )
