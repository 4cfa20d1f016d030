"""Receipts of applied updates, and the bounded ledger that answers a retry its first receipt."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RECEIPTS_KEPT_PER_CLIENT", "ReceiptLedger", "UpdateReceipt"]

# A client sends one update at a time and retries only that one; 8 leaves room for clients
# that pipeline a few.
RECEIPTS_KEPT_PER_CLIENT = 8


@dataclass(frozen=True)
class UpdateReceipt:
    """What the server answered for an applied update; a retry gets the same answer."""

    update_id: uuid.UUID
    client_id: str
    seq: int
    version: int
    staleness: int
    weight: float
    digest: bytes = field(repr=False)

    @property
    def base_version(self) -> int:
        """The version the update was trained on (it was weighed against ``version - 1``)."""
        return self.version - 1 - self.staleness

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": str(self.update_id),
            "client_id": self.client_id,
            "seq": self.seq,
            "version": self.version,
            "staleness": self.staleness,
            "weight": self.weight,
            "sha256": self.digest.hex(),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> UpdateReceipt:
        return cls(
            update_id=uuid.UUID(raw["update_id"]),
            client_id=str(raw["client_id"]),
            seq=int(raw["seq"]),
            version=int(raw["version"]),
            staleness=int(raw["staleness"]),
            weight=float(raw["weight"]),
            digest=bytes.fromhex(raw["sha256"]),
        )


class ReceiptLedger:
    """The receipts of applied updates that a retry could still need, and no more.

    A retried update must get its first answer and must never be applied twice. Keeping
    every receipt does both but grows without end, so a receipt is forgotten once a copy
    of its update could no longer be applied anyway: when the model has moved more than
    ``max_staleness`` versions past the update's base version, any resend is refused as
    too stale before the ledger is consulted. ``forgotten_below`` records that horizon
    (persisted with the checkpoint), so an update based below it is refused even if a
    restart raised ``max_staleness``. Each client's last ``keep_per_client`` receipts are
    kept whatever their age: the update a client retries after a crash or a timeout is
    its newest, and it gets its true receipt however fast the model moved meanwhile.

    Not thread-safe; ``ModelState`` guards it.
    """

    def __init__(self, keep_per_client: int = RECEIPTS_KEPT_PER_CLIENT) -> None:
        if keep_per_client < 1:
            raise ValueError(f"keep_per_client must be >= 1, got {keep_per_client!r}")
        self.keep_per_client = keep_per_client
        self.forgotten_below = 0
        self._recent: dict[uuid.UUID, UpdateReceipt] = {}  # in seq order
        self._pinned: dict[uuid.UUID, UpdateReceipt] = {}  # past the horizon, kept per client
        self._last: dict[str, deque[uuid.UUID]] = {}

    def __len__(self) -> int:
        return len(self._recent) + len(self._pinned)

    def get(self, update_id: uuid.UUID) -> UpdateReceipt | None:
        found = self._recent.get(update_id)
        return found if found is not None else self._pinned.get(update_id)

    def add(self, receipt: UpdateReceipt) -> None:
        self._recent[receipt.update_id] = receipt
        last = self._last.setdefault(receipt.client_id, deque())
        last.append(receipt.update_id)
        if len(last) > self.keep_per_client:
            self._pinned.pop(last.popleft(), None)

    def replace(self, receipt: UpdateReceipt) -> None:
        """Put ``receipt`` in place of the kept receipt of its update (a closed round's
        applied weight in place of the provisional one)."""
        for kept in (self._recent, self._pinned):
            if receipt.update_id in kept:
                kept[receipt.update_id] = receipt

    def forget_below(self, horizon: int) -> None:
        """Forget the receipts of updates based below version ``horizon``, but the pinned.

        Receipts come in seq order and a base version trails its receipt's version by at
        most ``max_staleness + 1``, so stopping at the first receipt inside the horizon
        keeps only a bounded number of older ones a little longer.
        """
        if horizon <= self.forgotten_below:
            return
        self.forgotten_below = horizon
        while self._recent:
            update_id, receipt = next(iter(self._recent.items()))
            if receipt.base_version >= horizon:
                break
            del self._recent[update_id]
            if update_id in self._last[receipt.client_id]:
                self._pinned[update_id] = receipt

    def receipts(self) -> Iterator[UpdateReceipt]:
        """Every kept receipt, in seq order."""
        kept = [*self._recent.values(), *self._pinned.values()]
        return iter(sorted(kept, key=lambda r: r.seq))

    def to_json(self) -> dict[str, Any]:
        return {
            "receipts": [r.to_json() for r in self.receipts()],
            "forgotten_below": self.forgotten_below,
        }

    @classmethod
    def from_json(
        cls, raw: Mapping[str, Any], keep_per_client: int = RECEIPTS_KEPT_PER_CLIENT
    ) -> ReceiptLedger:
        ledger = cls(keep_per_client)
        for receipt in sorted(
            (UpdateReceipt.from_json(r) for r in raw["receipts"]), key=lambda r: r.seq
        ):
            ledger.add(receipt)
        ledger.forget_below(int(raw["forgotten_below"]))
        return ledger
