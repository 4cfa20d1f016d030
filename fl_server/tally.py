"""Counters of applied updates, derived from the log so that they survive restarts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fl_server.store import UpdateRecord
from fl_server.weighting import ClientShare

__all__ = ["ClientTally", "UpdateTally"]


@dataclass
class ClientTally:
    updates_applied: int = 0
    last_update_at: float | None = None
    client_name: str | None = None
    # Sums over the client's applied updates; None when a checkpoint older than these
    # sums left some of them uncounted (a mean over part of them would mislead).
    staleness_sum: int | None = 0
    weight_sum: float | None = 0.0
    samples: int | None = None  # the training rows it last declared

    def mean_staleness(self) -> float | None:
        if self.staleness_sum is None or not self.updates_applied:
            return None
        return self.staleness_sum / self.updates_applied

    def mean_weight(self) -> float | None:
        if self.weight_sum is None or not self.updates_applied:
            return None
        return self.weight_sum / self.updates_applied


@dataclass
class UpdateTally:
    """Counters derived from the log (so they survive restarts); copied for readers."""

    clients: dict[str, ClientTally] = field(default_factory=dict)
    staleness: dict[int, int] = field(default_factory=dict)
    weight_sum: float = 0.0

    def count(self, record: UpdateRecord) -> None:
        client = self.clients.setdefault(record.client_id, ClientTally())
        client.updates_applied += 1
        client.last_update_at = record.received_at
        client.client_name = record.client_name or client.client_name
        if client.staleness_sum is not None:
            client.staleness_sum += record.staleness
        if client.weight_sum is not None:
            client.weight_sum += record.weight
        if record.samples is not None:
            client.samples = record.samples
        self.staleness[record.staleness] = self.staleness.get(record.staleness, 0) + 1
        self.weight_sum += record.weight

    def shares(self) -> dict[str, ClientShare]:
        """Each client's declared rows and applied updates (``fl_server.weighting``);
        a client that never declared its rows counts as the mean of those that did."""
        declared = [c.samples for c in self.clients.values() if c.samples is not None]
        mean = round(sum(declared) / len(declared)) if declared else 1
        return {
            k: ClientShare(v.samples if v.samples is not None else mean, v.updates_applied)
            for k, v in self.clients.items()
        }

    def copy(self) -> UpdateTally:
        return UpdateTally(
            clients={
                k: ClientTally(
                    v.updates_applied,
                    v.last_update_at,
                    v.client_name,
                    v.staleness_sum,
                    v.weight_sum,
                    v.samples,
                )
                for k, v in self.clients.items()
            },
            staleness=dict(self.staleness),
            weight_sum=self.weight_sum,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": {
                k: {
                    "updates_applied": v.updates_applied,
                    "last_update_at": v.last_update_at,
                    "client_name": v.client_name,
                    "staleness_sum": v.staleness_sum,
                    "weight_sum": v.weight_sum,
                    "samples": v.samples,
                }
                for k, v in self.clients.items()
            },
            "staleness": {str(k): v for k, v in self.staleness.items()},
            "weight_sum": self.weight_sum,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> UpdateTally:
        return cls(
            clients={
                str(k): ClientTally(
                    int(v["updates_applied"]),
                    v["last_update_at"],
                    v.get("client_name"),
                    v.get("staleness_sum"),
                    v.get("weight_sum"),
                    v.get("samples"),
                )
                for k, v in raw["clients"].items()
            },
            staleness={int(k): int(v) for k, v in raw["staleness"].items()},
            weight_sum=float(raw["weight_sum"]),
        )
