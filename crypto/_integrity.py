"""The checks a hospital runs on every model it decrypts: finite, within range, canaries ~0."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from crypto._errors import LayoutError
from crypto._layout import ModelLayout
from crypto._profiles import CkksProfile

__all__ = ["INTEGRITY_CHECKS", "IntegrityCheck", "IntegrityCheckName", "check_model"]

IntegrityCheckName = Literal["finite", "range", "canary"]

INTEGRITY_CHECKS: tuple[IntegrityCheckName, ...] = ("finite", "range", "canary")
"""The checks in the order they are named: the first that fails is the one reported."""


@dataclass(frozen=True)
class IntegrityCheck:
    """What the checks found in one decrypted model.

    Attributes
    ----------
    check
        The first check that failed (``finite``, then ``range``, then ``canary``), or
        ``None`` when every check passed.
    blocks
        The blocks that failed any check, in order.
    max_abs
        The largest magnitude of any finite value (parameters, canaries and padding),
        ``None`` if no value is finite.
    failures
        The blocks each failed check found (only checks that failed are keys).
    """

    check: IntegrityCheckName | None
    blocks: tuple[int, ...]
    max_abs: float | None
    failures: Mapping[IntegrityCheckName, tuple[int, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.check is None


def check_model(layout: ModelLayout, profile: CkksProfile, blocks: npt.ArrayLike) -> IntegrityCheck:
    """Check a decrypted model, ``(n_blocks, block_size)`` values of ``layout``.

    * ``finite``: no NaN or infinity;
    * ``range``: every value within ``profile.max_magnitude``, the largest the profile
      holds safely (an honest model never leaves it: clients encrypt nothing larger);
    * ``canary``: every canary and padding slot (``layout.zero_mask``) within
      ``profile.canary_tolerance`` of 0.

    A corrupted block (a flipped bit, another key) decrypts to garbage of about 1e4 in
    every slot, so it fails ``range`` and ``canary`` at once; a block that drifted by
    less than the range fails ``canary`` alone.

    Raises
    ------
    LayoutError
        ``blocks`` is not of the layout's shape, or the layout not of the profile's block
        size.
    """
    if layout.block_size != profile.block_size:
        raise LayoutError(
            f"layout of {layout.block_size}-value blocks, profile {profile.name!r} of "
            f"{profile.block_size}"
        )
    values = np.asarray(blocks, dtype=np.float64)
    if values.shape != (layout.n_blocks, layout.block_size):
        raise LayoutError(
            f"expected {layout.n_blocks}x{layout.block_size} values, got shape {values.shape}"
        )
    finite = np.isfinite(values)
    magnitude = np.where(finite, np.abs(values), 0.0)
    failed_rows = {
        "finite": ~finite.all(axis=1),
        "range": (magnitude > profile.max_magnitude).any(axis=1),
        "canary": (np.where(layout.zero_mask, magnitude, 0.0) > profile.canary_tolerance).any(
            axis=1
        ),
    }
    failures: dict[IntegrityCheckName, tuple[int, ...]] = {}
    for name in INTEGRITY_CHECKS:
        rows = np.flatnonzero(failed_rows[name])
        if rows.size:
            failures[name] = tuple(int(i) for i in rows)
    union = sorted({i for rows in failures.values() for i in rows})
    return IntegrityCheck(
        check=next(iter(failures), None),
        blocks=tuple(union),
        max_abs=float(magnitude.max()) if finite.any() else None,
        failures=failures,
    )
