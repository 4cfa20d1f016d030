"""The receipt ledger: what a retry still needs is kept, the rest is forgotten."""

from __future__ import annotations

import uuid

import pytest

from fl_server.receipts import ReceiptLedger, UpdateReceipt


def receipt(seq: int, client: str = "a", *, base: int | None = None) -> UpdateReceipt:
    """The receipt of update ``seq``, applied at version ``seq`` from base ``base``."""
    base = seq - 1 if base is None else base
    return UpdateReceipt(
        update_id=uuid.UUID(int=seq),
        client_id=client,
        seq=seq,
        version=seq,
        staleness=seq - 1 - base,
        weight=1.0,
        digest=bytes([seq % 256]) * 32,
    )


def test_base_version_is_what_the_update_was_weighed_against() -> None:
    assert receipt(10, base=7).base_version == 7
    assert receipt(10).base_version == 9


def test_receipts_based_below_the_horizon_are_forgotten() -> None:
    ledger = ReceiptLedger(keep_per_client=1)
    receipts = [receipt(seq, client=f"c{seq}") for seq in range(1, 11)]
    for r in receipts:
        ledger.add(r)
    ledger.add(receipt(11, client="c1"))  # c1's last is now 11: receipt 1 is not pinned

    ledger.forget_below(5)

    assert ledger.get(receipts[0].update_id) is None
    assert ledger.forgotten_below == 5
    # Receipts 2..4 are each their client's last: kept for that client's retry.
    assert [ledger.get(r.update_id) for r in receipts[1:4]] == receipts[1:4]
    assert all(ledger.get(r.update_id) == r for r in receipts[4:])
    assert len(ledger) == 10


def test_each_client_keeps_only_its_last_receipts_past_the_horizon() -> None:
    ledger = ReceiptLedger(keep_per_client=3)
    receipts = [receipt(seq) for seq in range(1, 21)]
    for r in receipts:
        ledger.add(r)

    ledger.forget_below(100)

    assert [r.seq for r in ledger.receipts()] == [18, 19, 20]
    ledger.add(receipt(21))
    assert [r.seq for r in ledger.receipts()] == [19, 20, 21]


def test_the_horizon_never_moves_back() -> None:
    ledger = ReceiptLedger()
    ledger.forget_below(7)
    ledger.forget_below(3)
    assert ledger.forgotten_below == 7


def test_json_round_trip_keeps_receipts_horizon_and_pinning() -> None:
    ledger = ReceiptLedger(keep_per_client=2)
    for seq in range(1, 9):
        ledger.add(receipt(seq, client="ab"[seq % 2]))
    ledger.forget_below(6)

    again = ReceiptLedger.from_json(ledger.to_json(), keep_per_client=2)

    assert list(again.receipts()) == list(ledger.receipts())
    assert again.forgotten_below == 6
    # The pinned receipts are still each client's last two: a new one unpins the oldest.
    again.add(receipt(9, client="b"))
    assert again.get(uuid.UUID(int=5)) is None
    assert again.get(uuid.UUID(int=7)) is not None


def test_keep_per_client_must_be_positive() -> None:
    with pytest.raises(ValueError, match="keep_per_client"):
        ReceiptLedger(keep_per_client=0)
