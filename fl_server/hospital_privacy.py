"""Hospital-level differential privacy at the server: the noise of each update, and its ε.

A study whose ``[privacy]`` has ``level = "hospital"`` has its hospitals clip every
update to L2 norm ``clip``; the server adds Gaussian noise of ``noise_multiplier · clip ·
w`` to every parameter slot of the model as it applies an update of weight ``w``. The
noise is drawn from a seed the server keeps in that update's log record only, so a
replay and a probe's rebuild see the same noise. Each hospital's ε is that of the
Gaussian mechanism with sampling rate 1, composed over its applied updates (the RDP
analysis of Opacus' ``RDPAccountant``): derived from the applied-update counts the log and
the checkpoints keep, so it survives kill -9 without a ledger of its own.
"""

from __future__ import annotations

import functools
import importlib.util
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np
import numpy.typing as npt

import crypto
import hefl_study
from fl_server.domain import ClientPrivacy
from fl_server.store import UpdateRecord

__all__ = ["UpdateNoise", "hospital_epsilon", "hospital_privacy", "update_noise"]


class _NoiseOp(Protocol):  # ServerCipher.add_noise / subtract_noise
    def __call__(
        self,
        model: crypto.EncryptedBlock,
        seed: int,
        std: float,
        *,
        index: int,
        zero_mask: npt.NDArray[np.bool_],
    ) -> None: ...


@dataclass(frozen=True)
class UpdateNoise:
    """The noise an applied update brings: ``std_per_weight · w`` at every parameter slot.

    ``zero_mask`` is the layout's ``(n_blocks, block_size)`` mask of canary and padding
    slots, which get none (the hospitals' integrity check still holds).
    """

    std_per_weight: float
    zero_mask: npt.NDArray[np.bool_]

    @staticmethod
    def draw_seed() -> int:
        """A fresh seed for one update's noise (OS randomness: no party can predict it)."""
        return secrets.randbits(128)

    def add(
        self,
        cipher: crypto.ServerCipher,
        blocks: Sequence[crypto.EncryptedBlock],
        records: Sequence[UpdateRecord],
    ) -> None:
        """Add the noise of each of ``records`` (at its applied weight) to every block."""
        for record in records:
            if record.noise_seed is not None:  # None: logged before the job's noise
                self.draw(cipher.add_noise, blocks, record.noise_seed, record.weight)

    def subtract(
        self,
        cipher: crypto.ServerCipher,
        blocks: Sequence[crypto.EncryptedBlock],
        records: Sequence[UpdateRecord],
    ) -> None:
        """Take out exactly what ``add`` put in for ``records`` (a rebuild of a past version)."""
        for record in records:
            if record.noise_seed is not None:
                self.draw(cipher.subtract_noise, blocks, record.noise_seed, record.weight)

    def draw(
        self, op: _NoiseOp, blocks: Sequence[crypto.EncryptedBlock], seed: int, weight: float
    ) -> None:
        """One update's noise, of ``std_per_weight · weight``, into (or out of) every block."""
        std = self.std_per_weight * weight
        for index, block in enumerate(blocks):
            op(block, seed, std, index=index, zero_mask=self.zero_mask[index])


def update_noise(
    privacy: hefl_study.PrivacySpec | None, layout: crypto.ModelLayout
) -> UpdateNoise | None:
    """The noise of a study's updates; ``None`` unless its ``[privacy]`` is hospital-level."""
    if privacy is None or privacy.level != "hospital":
        return None
    assert privacy.clip is not None  # hefl_study: the hospital level has both
    assert privacy.noise_multiplier is not None
    return UpdateNoise(privacy.noise_multiplier * privacy.clip, layout.zero_mask)


# Opacus' RDPAccountant.DEFAULT_ALPHAS (the RDP orders it minimizes over); a test checks
# that they are still Opacus' own.
RDP_ORDERS: tuple[float, ...] = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *(float(x) for x in range(12, 64)),
)


@functools.cache
def _opacus_rdp() -> ModuleType:
    """Opacus' RDP analysis (``opacus/accountants/analysis/rdp.py``: numpy and scipy only),
    loaded from its file: importing the ``opacus`` package pulls torch into the server
    (6 s and about 300 MB on this machine) for a few lines of arithmetic."""
    found = importlib.util.find_spec("opacus")  # finds it without importing it
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError("opacus is not installed (a dependency of hefl)")
    path = Path(found.submodule_search_locations[0], "accountants", "analysis", "rdp.py")
    spec = importlib.util.spec_from_file_location("fl_server._opacus_rdp", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=4096)
def hospital_epsilon(noise_multiplier: float, updates: int, delta: float) -> float:
    """ε at ``delta`` after ``updates`` Gaussian mechanisms of ``noise_multiplier`` (RDP,
    sampling rate 1: every applied update of a hospital is one release of its data).

    What Opacus' ``RDPAccountant`` says for the history ``[(noise_multiplier, 1.0,
    updates)]``, computed with its own analysis functions.
    """
    if updates <= 0:
        return 0.0
    rdp = _opacus_rdp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RDP's "optimal order is the largest alpha"
        orders = list(RDP_ORDERS)
        spent = rdp.compute_rdp(
            q=1.0, noise_multiplier=noise_multiplier, steps=updates, orders=orders
        )
        epsilon, _ = rdp.get_privacy_spent(orders=orders, rdp=spent, delta=delta)
    return float(epsilon)


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
